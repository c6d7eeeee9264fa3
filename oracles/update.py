"""Layer 4, update level: exact consequences of whole updates on a tabular oracle environment.

On a :class:`~oracles.envs.TabularEnv` with one-hot observations the agent's policy is a table
``pi[s, a]`` (its network evaluated at every state), so exact quantities apply to it:

* :func:`check_update_kl` -- the exact mean ``KL(pi_k || pi_{k+1})`` under the on-policy state
  distribution of ``pi_k`` for every update, against TRPO's delta (PPO's is reported);
* :func:`check_improvement` -- the exact return ``J`` over a training run;
* :func:`check_convergence` -- ``J`` of the final policy against the optimal ``J*`` (policy
  iteration) within a relative tolerance;
* :func:`check_critic` -- the fitted critic after training against the exact ``V`` of the final
  policy (its regression target's expectation).

References: Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12) (the mean-KL constraint);
Kakade & Langford (2002) (improvement for small steps); :mod:`pgtheory.evaluation`.
"""

from __future__ import annotations

import itertools

import numpy as np

import pgtheory as pg
from oracles.results import CheckResult

__all__ = ["check_convergence", "check_critic", "check_improvement", "check_update_kl",
           "tabular_policy", "tabular_values"]

LAYER = "update_level"


def _onehots(n_states: int):
    import torch

    return torch.eye(n_states, dtype=torch.float32)


def tabular_policy(agent, n_states: int, parameters: dict | None = None) -> np.ndarray:
    """The agent's action probabilities at every state of a one-hot tabular env.

    Parameters
    ----------
    agent
        A protocol agent with a categorical ``distribution``.
    n_states : int
    parameters : dict, optional
        Evaluate at these parameters (restored afterwards); default the current ones.

    Returns
    -------
    ndarray, shape (S, A)
        Rows sum to 1 (float64).

    Raises
    ------
    ValueError
        The distribution has no ``probs`` (not categorical) or they are not finite.
    """
    import torch

    from oracles.protocol import parameters_set

    def probs() -> np.ndarray:
        with torch.no_grad():
            d = agent.distribution(_onehots(n_states))
        if not hasattr(d, "probs"):
            raise ValueError(f"distribution: expected a categorical distribution with probs, "
                             f"received {type(d).__name__}")
        p = d.probs.detach().cpu().numpy().astype(np.float64)
        if not np.all(np.isfinite(p)):
            raise ValueError("distribution: action probabilities contain NaN or inf")
        return p / p.sum(axis=1, keepdims=True)

    if parameters is None:
        return probs()
    with parameters_set(agent, parameters):
        return probs()


def tabular_values(agent, n_states: int, parameters: dict | None = None) -> np.ndarray:
    """The agent's critic at every state (zeros when it has none), shape (S,).

    Raises
    ------
    Nothing beyond the agent's own exceptions.
    """
    import torch

    from oracles.protocol import parameters_set

    if not callable(getattr(agent, "value", None)):
        return np.zeros(n_states)

    def values() -> np.ndarray:
        with torch.no_grad():
            return agent.value(_onehots(n_states)).detach().cpu().numpy().astype(np.float64)

    if parameters is None:
        return values()
    with parameters_set(agent, parameters):
        return values()


def check_update_kl(mdp: pg.TabularMDP, policies: list, *, max_kl: float | None = None,
                    time_limit: int | None = None, slack: float = 3.0) -> CheckResult:
    """Exact mean KL between consecutive policies, against a trust region when there is one.

    The mean is under the on-policy state distribution of the old policy (the distribution
    the implementation's batch was sampled from, with the env's time limit). TRPO enforces
    ``KL <= delta`` on its *batch*, a sample of that distribution; the exact mean may exceed
    delta through sampling error, so the check fails only above ``slack * delta`` (default 3).

    Parameters
    ----------
    mdp : TabularMDP
    policies : list of array_like, shape (S, A)
        ``pi_0, pi_1, ...`` before and after each update.
    max_kl : float, optional
        TRPO's delta; without it the KLs are reported and the verdict is ``skip``.
    time_limit : int, optional
    slack : float

    Returns
    -------
    CheckResult

    Raises
    ------
    ValueError
        Fewer than two policies.

    References
    ----------
    Schulman et al. (2015), arXiv:1502.05477v5, Eq. (12); :func:`pgtheory.policy_divergence`.
    """
    name = "update_level.kl"
    if len(policies) < 2:
        raise ValueError(f"policies: expected at least 2, received {len(policies)}")
    kls = []
    for old, new in itertools.pairwise(policies):
        d = pg.on_policy_distribution(mdp, old, time_limit=time_limit)
        kls.append(float(pg.policy_divergence(mdp, old, new, state_distribution=d).mean_kl))
    worst = int(np.argmax(kls))
    summary = f"max {kls[worst]:.3g} (update {worst}), median {np.median(kls):.3g}"
    if max_kl is None:
        return CheckResult(name, LAYER, "skip", "no KL bound declared", summary,
                           f"exact mean KL per update {summary}; the target declares no trust "
                           f"region, so nothing is asserted")
    if kls[worst] > slack * max_kl:
        return CheckResult(name, LAYER, "fail", f"<= {slack} x delta = {slack * max_kl:.3g}",
                           f"{kls[worst]:.3g}",
                           f"update {worst} moved the policy by exact mean KL {kls[worst]:.3g}, "
                           f"more than {slack} x delta ({max_kl}): the trust region is not "
                           f"enforced", tolerance=slack * max_kl)
    return CheckResult(name, LAYER, "pass", f"<= {slack} x delta", summary,
                       f"{len(kls)} updates within the trust region (exact mean KL {summary}, "
                       f"delta {max_kl})", tolerance=slack * max_kl)


def check_improvement(mdp: pg.TabularMDP, policies: list, *, margin: float = 0.0) -> CheckResult:
    """The exact return ``J`` after a training run exceeds ``J`` before it by ``margin``.

    Returns
    -------
    CheckResult
        The explanation gives ``J`` at the start, the end and its largest drop.

    Raises
    ------
    ValueError
        Fewer than two policies.

    References
    ----------
    Kakade & Langford (2002), ICML, Thm. 4.1 (improvement for small steps along the gradient).
    """
    name = "update_level.improvement"
    if len(policies) < 2:
        raise ValueError(f"policies: expected at least 2, received {len(policies)}")
    J = np.array([pg.expected_return(mdp, p) for p in policies])
    drops = np.diff(J)
    text = (f"J {J[0]:.4g} -> {J[-1]:.4g} over {len(J) - 1} recorded policies (largest drop "
            f"between consecutive ones {min(drops.min(), 0):.3g})")
    if not J[-1] > J[0] + margin:
        return CheckResult(name, LAYER, "fail", f"J_end > J_start + {margin}", f"{J[-1]:.4g}",
                           f"the exact return did not improve over training: {text}; a sign "
                           f"or weighting error in the update", tolerance=margin)
    return CheckResult(name, LAYER, "pass", f"J_end > J_start + {margin}", f"{J[-1]:.4g}", text,
                       tolerance=margin)


def check_convergence(mdp: pg.TabularMDP, pi, *, rtol: float = 0.05,
                      budget: str = "") -> CheckResult:
    """``J(pi) >= J* - rtol * |J*|`` with ``J*`` from policy iteration.

    Parameters
    ----------
    rtol : float
        Relative gap allowed (default 5%).
    budget : str
        The training budget, for the explanation.

    Returns
    -------
    CheckResult

    Raises
    ------
    InvalidPolicyError
        ``pi`` is not a stochastic (S, A) matrix.

    References
    ----------
    :func:`pgtheory.policy_iteration`.
    """
    name = "update_level.convergence"
    J = float(pg.expected_return(mdp, pi))
    J_star = float(pg.expected_return(mdp, pg.policy_iteration(mdp).policy))
    gap = J_star - J
    tol = rtol * max(abs(J_star), 1e-12)
    text = f"J = {J:.4g} vs J* = {J_star:.4g} (gap {gap:.3g}, allowed {tol:.3g}){budget}"
    if gap > tol:
        return CheckResult(name, LAYER, "fail", f">= {J_star - tol:.4g}", f"{J:.4g}",
                           f"not near-optimal after training: {text}", tolerance=rtol)
    return CheckResult(name, LAYER, "pass", f">= {J_star - tol:.4g}", f"{J:.4g}",
                       f"near-optimal: {text}", tolerance=rtol)


def check_critic(mdp: pg.TabularMDP, pi, values, *, rtol: float = 0.1,
                 min_visit: float = 0.05, time_limit: int | None = None,
                 budget: str = "") -> CheckResult:
    """A fitted critic against its exact target: ``V_phi(s)`` vs the exact ``V_pi(s)``.

    After training, the critic regresses on lambda-returns of (nearly) the final policy, whose
    expectation is ``V_pi`` at every state the policy visits (for any lambda: ``V_pi`` is the
    fixed point of every TD(lambda) target). A critic trained by stochastic gradient steps does
    not sit at that fixed point: its last iterate fluctuates around it with the step size's
    noise (one RMSprop step on 64 transitions per A2C update). The check therefore takes the
    critics and policies of the last ``K`` updates (a window) and compares the averaged critic
    ``mean_k V_phi_k`` with the averaged exact target ``mean_k V_{pi_k}`` (iterate averaging,
    Polyak & Juditsky 1992), at the non-terminal states whose on-policy visitation, averaged
    over the window, is at least ``min_visit``, within ``rtol * max_s |V(s)|``. Defects that
    change the target (regressing on the advantage, normalized targets, a wrong sign, a wrong
    discount) move it by a multiple of the values, and averaging keeps them.

    Measured in the audit's training run on probe 5 (40 seeds of our A2C): the last iterate's
    worst relative error reached 0.117 (seed 27: a false alarm at ``rtol = 0.1`` before the
    window), the 20-update average's at most 0.010; the critic-target mutants of
    :mod:`oracles.mutants` sit at 0.47 or more.

    Parameters
    ----------
    mdp : TabularMDP
    pi : array_like, shape (S, A) or (K, S, A)
        The final policy, or the policies after each of the last ``K`` updates.
    values : array_like, shape (S,) or (K, S)
        The agent's critic at every state, after the same updates as ``pi``.
    rtol, min_visit : float
    time_limit : int, optional
        For the on-policy visitation.
    budget : str
        For the explanation.

    Returns
    -------
    CheckResult

    Raises
    ------
    InvalidPolicyError
        A policy is not a stochastic (S, A) matrix.
    ValueError
        ``values`` does not have the shape of ``pi`` without its action axis.

    References
    ----------
    Sutton & Barto (2018), Sec. 12.1 (the lambda-return's expectation is V_pi);
    Polyak & Juditsky (1992), SIAM J. Control Optim. 30(4) (averaged stochastic iterates);
    :func:`pgtheory.state_values`, :func:`pgtheory.on_policy_distribution`.
    """
    name = "update_level.critic"
    v = np.asarray(values, dtype=float)
    pis = np.asarray(pi, dtype=float)
    if pis.ndim == 2:
        pis, v = pis[None], v[None]
    if v.shape != pis.shape[:2]:
        raise ValueError(f"values: expected shape {pis.shape[:2]} (the policies' (K, S)), "
                         f"received {np.asarray(values).shape}")
    if not np.all(np.isfinite(v)):
        return CheckResult(name, LAYER, "fail", "finite values", "NaN/inf",
                           "the critic returns non-finite values")
    n = len(pis)
    exact = np.mean([pg.state_values(mdp, p) for p in pis], axis=0)
    visit = np.mean([pg.on_policy_distribution(mdp, p, time_limit=time_limit) for p in pis],
                    axis=0)
    v = v.mean(axis=0)
    mask = (visit >= min_visit) & ~mdp.terminal.astype(bool)
    tol = rtol * max(float(np.abs(exact[mask]).max()) if mask.any() else 0.0, 1e-6)
    err = np.abs(v - exact)
    worst = int(np.flatnonzero(mask)[np.argmax(err[mask])])
    window = f" (both averaged over the last {n} updates)" if n > 1 else ""
    text = (f"max |V_phi - V_pi| = {err[worst]:.3g} at state {worst} (V_phi {v[worst]:.4g}, "
            f"V_pi {exact[worst]:.4g}){window} over {int(mask.sum())} visited states, allowed "
            f"{tol:.3g}{budget}")
    if err[worst] > tol:
        why = ""
        if abs(v[worst] - 0.5 * exact[worst]) < tol:
            why = "; V_phi is about V_pi / 2, as when the critic regresses on the advantage"
        return CheckResult(name, LAYER, "fail", f"{exact[worst]:.4g}", f"{v[worst]:.4g}",
                           f"the fitted critic is off its exact target: {text}{why}",
                           tolerance=rtol)
    return CheckResult(name, LAYER, "pass", f"{exact[worst]:.4g}", f"{v[worst]:.4g}",
                       f"the fitted critic matches V of the policy: {text}",
                       tolerance=rtol)
