"""Layer 1 (components): each check passes a correct implementation written here from the
formulas, and fails seeded defects with a message naming the defect class."""

import re

import numpy as np
import pytest
import torch
from pgtheory.oracles import components as oc
from pgtheory.oracles.results import CheckFailed


# ------------------------------------------------------------- correct implementations
def my_gae(rewards, values, terminated, truncated, gamma, lam, next_values):
    adv, last = np.zeros_like(rewards), np.zeros(rewards.shape[1])
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t]) - values[t]
        last = delta + gamma * lam * (1 - terminated[t]) * (1 - truncated[t]) * last
        adv[t] = last
    return adv


def my_returns(rewards, terminated, truncated, gamma, next_values):
    out, nxt = np.zeros_like(rewards), next_values[-1]
    for t in reversed(range(len(rewards))):
        tail = next_values[t] if t == len(rewards) - 1 else np.where(truncated[t],
                                                                     next_values[t], nxt)
        out[t] = nxt = rewards[t] + gamma * (1 - terminated[t]) * tail
    return out


def my_lambda_returns(rewards, terminated, truncated, gamma, lam, next_values):
    out, nxt = np.zeros_like(rewards), next_values[-1]
    for t in reversed(range(len(rewards))):
        if t == len(rewards) - 1:
            tail = next_values[t]
        else:
            tail = np.where(truncated[t], next_values[t],
                            (1 - lam) * next_values[t] + lam * nxt)
        out[t] = nxt = rewards[t] + gamma * (1 - terminated[t]) * tail
    return out


def my_ppo_loss(logp_new, logp_old, advantages, clip_range):
    ratio = torch.exp(logp_new - logp_old)
    return -torch.min(ratio * advantages,
                      torch.clamp(ratio, 1 - clip_range, 1 + clip_range) * advantages).mean()


def my_value_loss(values, values_old, returns, clip_range):
    clipped = values_old + torch.clamp(values - values_old, -clip_range, clip_range)
    return 0.5 * torch.max((values - returns) ** 2, (clipped - returns) ** 2).mean()


def my_cg(matvec, b, n_iters):
    x, r = np.zeros_like(b), b.copy()
    p, rr = r.copy(), r @ r
    for _ in range(n_iters):
        Ap = matvec(p)
        a = rr / (p @ Ap)
        x, r = x + a * p, r - a * Ap
        if r @ r < 1e-30:
            break
        p, rr = r + (r @ r) / rr * p, r @ r
    return x


def my_line_search(objective, kl, x0, full_step, max_kl, coef, max_backtracks):
    f0 = objective(x0)
    for k in range(max_backtracks + 1):
        x = x0 + coef**k * full_step
        if objective(x) > f0 and kl(x) <= max_kl:
            return x
    return x0


CORRECT = {
    "gae": (oc.check_gae, my_gae),
    "returns": (oc.check_discounted_returns, my_returns),
    "lambda_returns": (oc.check_lambda_returns, my_lambda_returns),
    "ppo_loss": (oc.check_clipped_surrogate_loss, my_ppo_loss),
    "ppo_loss_torch_distributions": (oc.check_clipped_surrogate_loss, my_ppo_loss),
    "value_loss": (oc.check_clipped_value_loss, my_value_loss),
    "categorical_entropy": (oc.check_categorical_entropy, lambda logits:
                            torch.distributions.Categorical(logits=logits).entropy()),
    "categorical_kl": (oc.check_categorical_kl, lambda logits_p, logits_q:
                       torch.distributions.kl_divergence(
                           torch.distributions.Categorical(logits=logits_p),
                           torch.distributions.Categorical(logits=logits_q))),
    "kl_k1": (lambda f: oc.check_kl_estimator(f, "k1"), lambda logp, logq: logq - logp),
    "kl_k2": (lambda f: oc.check_kl_estimator(f, "k2"), lambda logp, logq: (logp - logq) ** 2 / 2),
    "kl_k3": (lambda f: oc.check_kl_estimator(f, "k3"),
              lambda logp, logq: torch.expm1(logp - logq) - (logp - logq)),
    "gaussian_log_prob": (oc.check_gaussian_log_prob, lambda actions, mean, log_std:
                          torch.distributions.Normal(mean, log_std.exp()).log_prob(actions)
                          .sum(-1)),
    "gaussian_entropy": (oc.check_gaussian_entropy, lambda log_std:
                         torch.distributions.Normal(torch.zeros_like(log_std), log_std.exp())
                         .entropy().sum(-1)),
    "gaussian_kl": (oc.check_gaussian_kl, lambda m1, s1, m2, s2:
                    torch.distributions.kl_divergence(torch.distributions.Normal(m1, s1.exp()),
                                                      torch.distributions.Normal(m2, s2.exp()))
                    .sum(-1)),
    "conjugate_gradient": (oc.check_conjugate_gradient, my_cg),
    "line_search": (oc.check_backtracking_line_search, my_line_search),
}


@pytest.mark.parametrize("name", list(CORRECT))
def test_correct_implementation_passes(name):
    check, fn = CORRECT[name]
    res = check(fn)
    assert res.passed, str(res)
    res.assert_ok()


def test_positive_rescaling_passes_with_a_note():
    res = oc.check_clipped_surrogate_loss(lambda *a: my_ppo_loss(*a) * 64.0)
    assert res.passed and "positive factor 64" in res.explanation


# ------------------------------------------------------------------- seeded defects
def gae_truncation_as_termination(r, v, term, trunc, g, lam, next_values):
    return my_gae(r, v, term | trunc, trunc, g, lam, next_values)


def gae_lambda_only(r, v, term, trunc, g, lam, next_values):
    nv = next_values
    adv, last = np.zeros_like(r), np.zeros(r.shape[1])
    for t in reversed(range(len(r))):
        delta = r[t] + g * nv[t] * (1 - term[t]) - v[t]
        last = delta + lam * (1 - term[t]) * (1 - trunc[t]) * last
        adv[t] = last
    return adv


def gae_shifted_done(r, v, term, trunc, g, lam, next_values):
    sh = lambda x: np.concatenate([np.zeros_like(x[:1]), x[:-1]])  # noqa: E731
    return my_gae(r, v, sh(term), sh(trunc), g, lam, next_values)


def cg_returns_b(matvec, b, n_iters):
    return b


def line_search_no_kl(objective, kl, x0, full_step, max_kl, coef, max_backtracks):
    return my_line_search(objective, lambda x: 0.0, x0, full_step, max_kl, coef, max_backtracks)


DEFECTS = [
    ("gae", oc.check_gae, gae_truncation_as_termination, "truncation treated as termination"),
    ("gae", oc.check_gae, gae_lambda_only, "lambda^l instead of (gamma lambda)^l"),
    ("gae", oc.check_gae, gae_shifted_done, "done flag of the wrong step"),
    ("gae", oc.check_gae, lambda r, v, te, tr, g, lam, next_values: np.full_like(r, np.nan),
     "non-finite"),
    ("gae", oc.check_gae, lambda *a, **k: 1 / 0, "raised ZeroDivisionError"),
    ("returns", oc.check_discounted_returns,
     lambda r, te, tr, g, next_values: my_returns(r, te | tr, tr, g, next_values),
     "truncation treated"),
    ("lambda_returns", oc.check_lambda_returns,
     lambda r, te, tr, g, lam, next_values: my_lambda_returns(r, te | tr, tr, g, lam,
                                                              next_values),
     "truncation treated"),
    ("ppo_loss", oc.check_clipped_surrogate_loss,
     lambda n, o, a, c: -torch.max(torch.exp(n - o) * a,
                                   torch.clamp(torch.exp(n - o), 1 - c, 1 + c) * a).mean(),
     "min and max swapped"),
    ("ppo_loss", oc.check_clipped_surrogate_loss,
     lambda n, o, a, c: -torch.min(torch.exp(o - n) * a,
                                   torch.clamp(torch.exp(o - n), 1 - c, 1 + c) * a).mean(),
     "ratio inverted"),
    ("ppo_loss", oc.check_clipped_surrogate_loss,
     lambda n, o, a, c: -torch.min((n - o) * a, torch.clamp(torch.exp(n - o), 1 - c, 1 + c)
                                   * a).mean(), "log-ratio in place of the ratio"),
    ("ppo_loss", oc.check_clipped_surrogate_loss, lambda *a: -my_ppo_loss(*a), "sign flipped"),
    ("value_loss", oc.check_clipped_value_loss,
     lambda v, vo, R, c: 0.5 * torch.max((v - R) ** 2, (vo + torch.clamp(v - vo, -c, c).detach()
                                                        - R) ** 2).mean(),
     "gradient vanishes"),
    ("value_loss", oc.check_clipped_value_loss,
     lambda v, vo, R, c: 0.5 * torch.min((v - R) ** 2, (vo + torch.clamp(v - vo, -c, c)
                                                        - R) ** 2).mean(), "min instead of max"),
    ("categorical_entropy", oc.check_categorical_entropy,
     lambda logits: -torch.distributions.Categorical(logits=logits).entropy(),
     "[catalogue: entropy_wrong_sign]"),
    ("categorical_kl", oc.check_categorical_kl,
     lambda logits_p, logits_q: torch.distributions.kl_divergence(
         torch.distributions.Categorical(logits=logits_q),
         torch.distributions.Categorical(logits=logits_p)), "direction reversed"),
    ("kl_k3", lambda f: oc.check_kl_estimator(f, "k3"), lambda logp, logq: logq - logp,
     "[catalogue: kl_k1_for_k3]"),
    ("gaussian_log_prob", oc.check_gaussian_log_prob,
     lambda actions, mean, log_std: torch.distributions.Normal(mean, log_std.exp())
     .log_prob(actions).mean(-1), "averaged instead of summed"),
    ("gaussian_log_prob", oc.check_gaussian_log_prob,
     lambda actions, mean, log_std: torch.distributions.Normal(mean, (0.5 * log_std).exp())
     .log_prob(actions).sum(-1), "log-std treated as log-variance"),
    ("gaussian_entropy", oc.check_gaussian_entropy,
     lambda log_std: torch.distributions.Normal(torch.zeros_like(log_std), log_std.exp())
     .entropy().mean(-1), "[catalogue: gaussian_entropy_not_summed]"),
    ("gaussian_kl", oc.check_gaussian_kl,
     lambda m1, s1, m2, s2: (s2 - s1 + 0.5 * ((s1 - s2).exp() + ((m1 - m2) / s2.exp()) ** 2)
                             - 0.5).sum(-1), "[catalogue: gaussian_kl_no_square]"),
    ("conjugate_gradient", oc.check_conjugate_gradient, cg_returns_b, "[catalogue: cg_skipped]"),
    ("line_search", oc.check_backtracking_line_search, line_search_no_kl,
     "accepts without checking the KL"),
    ("line_search", oc.check_backtracking_line_search,
     lambda f, kl, x0, step, mk, c, n: x0, "never accepts"),
]


@pytest.mark.parametrize(("check", "fn", "named"), [d[1:] for d in DEFECTS],
                         ids=[f"{d[0]}: {d[3]}" for d in DEFECTS])
def test_seeded_defect_fails_and_is_named(check, fn, named):
    res = check(fn)
    assert res.verdict == "fail"
    assert named in res.explanation, res.explanation
    with pytest.raises(CheckFailed, match=re.escape(named[:20])):
        res.assert_ok()


def test_unknown_kl_estimator_kind():
    with pytest.raises(ValueError, match="k1"):
        oc.check_kl_estimator(lambda a, b: a, "k4")
