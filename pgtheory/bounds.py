"""Performance-difference identity, surrogate objective, and policy-improvement lower bounds.

Each function returns the quantities on both sides of its identity or inequality so that
tests and users can compare them. Units: returns and advantages in reward units, KL in nats.

Visitation conventions: ``rho_pi`` (unnormalized, sums to 1/(1-gamma)) and ``d_pi = (1 -
gamma) rho_pi``; see :func:`pgtheory.discounted_visitation`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.special import rel_entr

from pgtheory._validation import DEFAULT_ATOL, check_unit_interval
from pgtheory.evaluation import solve_bellman, values_and_visitation
from pgtheory.mdp import TabularMDP

__all__ = [
    "CPIBound",
    "CPOBound",
    "PerformanceDifference",
    "TRPOBound",
    "cpi_lower_bound",
    "cpo_lower_bound",
    "performance_difference",
    "surrogate",
    "trpo_lower_bound",
]


def _values_and_advantages(mdp: TabularMDP, p: np.ndarray):
    """``(V_pi, A_pi, rho_pi)`` of a validated policy from one factorization."""
    v, rho = values_and_visitation(mdp, p)
    adv = mdp.R + mdp.gamma * mdp.next_state_expectation(v) - v[:, None]
    return v, adv, rho


@dataclasses.dataclass(frozen=True)
class PerformanceDifference:
    """Both sides of the performance difference lemma (reward units).

    Attributes
    ----------
    difference : float
        ``J(pi_new) - J(pi)``, from two policy evaluations.
    trajectory_form : float
        ``E_{tau ~ pi_new}[sum_t gamma^t A_pi(s_t, a_t)]``, evaluated as the value under
        ``pi_new`` of the reward ``A_pi`` (a forward linear solve).
    rho_form : float
        ``sum_s rho_{pi_new}(s) sum_a pi_new(a|s) A_pi(s, a)`` (a transposed linear solve).
    d_form : float
        ``(1 / (1 - gamma)) E_{s ~ d_{pi_new}, a ~ pi_new}[A_pi(s, a)]``.
    """

    difference: float
    trajectory_form: float
    rho_form: float
    d_form: float


def performance_difference(mdp: TabularMDP, pi, pi_new, *,
                           atol: float = DEFAULT_ATOL) -> PerformanceDifference:
    """Performance difference lemma in its three forms.

    ``J(pi_new) - J(pi) = E_{tau ~ pi_new}[sum_t gamma^t A_pi(s_t, a_t)]
    = sum_s rho_{pi_new}(s) sum_a pi_new(a|s) A_pi(s, a)
    = (1/(1-gamma)) E_{s ~ d_{pi_new}, a ~ pi_new}[A_pi(s, a)]``.

    Parameters
    ----------
    mdp : TabularMDP
    pi, pi_new : array_like, shape (S, A)
        Reference and new policies.

    Returns
    -------
    PerformanceDifference

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Kakade & Langford (2002), ICML, Lemma 6.1; Schulman et al. (2015), arXiv:1502.05477v5,
    Eqs. (1)-(2); Agarwal et al. (2021), arXiv:1908.00261, Lemma 2 (performance difference).
    """
    p = mdp.check_policy(pi, atol=atol)
    q = mdp.check_policy(pi_new, name="pi_new", atol=atol)
    v_old, adv, _ = _values_and_advantages(mdp, p)
    P_new = mdp.transition_matrix(q)
    v_new = solve_bellman(mdp, P_new, mdp.policy_reward(q), discount=mdp.gamma)
    a_new = np.einsum("sa,sa->s", q, adv)
    traj = float(mdp.mu @ solve_bellman(mdp, P_new, a_new, discount=mdp.gamma))
    rho_new = solve_bellman(mdp, P_new, mdp.mu, discount=mdp.gamma, transpose=True)
    rho_form = float(rho_new @ a_new)
    d_new = (1.0 - mdp.gamma) * rho_new
    d_form = float(d_new @ a_new) / (1.0 - mdp.gamma)
    return PerformanceDifference(difference=float(mdp.mu @ (v_new - v_old)),
                                 trajectory_form=traj, rho_form=rho_form, d_form=d_form)


def surrogate(mdp: TabularMDP, pi, pi_new, *, atol: float = DEFAULT_ATOL) -> float:
    """Local surrogate ``L_pi(pi_new) = J(pi) + sum_s rho_pi(s) sum_a pi_new(a|s) A_pi(s, a)``.

    Uses the *old* policy's visitation ``rho_pi`` (unnormalized); it matches ``J(pi_new)`` to
    first order at ``pi_new = pi`` (TRPO Sec. 2).

    Returns
    -------
    float
        Reward units.

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Kakade & Langford (2002), ICML, Sec. 4; Schulman et al. (2015), arXiv:1502.05477v5, Eq. (3).
    """
    p = mdp.check_policy(pi, atol=atol)
    q = mdp.check_policy(pi_new, name="pi_new", atol=atol)
    v, adv, rho = _values_and_advantages(mdp, p)
    return float(mdp.mu @ v + rho @ np.einsum("sa,sa->s", q, adv))


@dataclasses.dataclass(frozen=True)
class TRPOBound:
    """TRPO Theorem 1 lower bounds on ``J(pi_new)`` and the quantities they use.

    Attributes
    ----------
    expected_return : float
        Exact ``J(pi_new)``.
    surrogate : float
        ``L_pi(pi_new)``.
    epsilon : float
        ``max_{s,a} |A_pi(s, a)|`` (reward units).
    max_tv, max_kl : float
        ``alpha = max_s TV(pi(.|s), pi_new(.|s))`` and ``max_s KL(pi(.|s) || pi_new(.|s))``
        over non-terminal states.
    penalty_coefficient : float
        ``C = 4 epsilon gamma / (1 - gamma)^2``.
    tv_bound : float
        ``L - C alpha^2`` (TRPO Theorem 1).
    kl_bound : float
        ``L - C KL_max`` (TRPO Eq. (9)); ``-inf`` when ``KL_max`` is infinite.
    """

    expected_return: float
    surrogate: float
    epsilon: float
    max_tv: float
    max_kl: float
    penalty_coefficient: float
    tv_bound: float
    kl_bound: float


def trpo_lower_bound(mdp: TabularMDP, pi, pi_new, *, atol: float = DEFAULT_ATOL) -> TRPOBound:
    """TRPO's policy-improvement lower bound, TV and KL forms.

    ``J(pi_new) >= L_pi(pi_new) - C alpha^2 >= L_pi(pi_new) - C KL_max`` with
    ``C = 4 eps gamma / (1 - gamma)^2``, ``eps = max_{s,a} |A_pi(s, a)|``,
    ``alpha = max_s TV`` and ``TV^2 <= KL`` (Pollard 2000).

    Returns
    -------
    TRPOBound

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Schulman et al. (2015), "Trust region policy optimization", arXiv:1502.05477v5,
    Theorem 1 and Eq. (9).
    """
    p = mdp.check_policy(pi, atol=atol)
    q = mdp.check_policy(pi_new, name="pi_new", atol=atol)
    v, adv, rho = _values_and_advantages(mdp, p)
    L = float(mdp.mu @ v + rho @ np.einsum("sa,sa->s", q, adv))
    live = ~mdp.terminal
    eps = float(np.abs(adv[live]).max())
    tv = 0.5 * np.abs(p - q).sum(axis=1)[live]
    kl = rel_entr(p, q).sum(axis=1)[live]
    alpha, kl_max = float(tv.max()), float(kl.max())
    C = 4.0 * eps * mdp.gamma / (1.0 - mdp.gamma) ** 2
    kl_bound = L - C * kl_max if np.isfinite(kl_max) else -np.inf
    v_new = solve_bellman(mdp, mdp.transition_matrix(q), mdp.policy_reward(q),
                          discount=mdp.gamma)
    return TRPOBound(expected_return=float(mdp.mu @ v_new), surrogate=L, epsilon=eps,
                     max_tv=alpha, max_kl=kl_max, penalty_coefficient=C,
                     tv_bound=L - C * alpha ** 2, kl_bound=float(kl_bound))


@dataclasses.dataclass(frozen=True)
class CPIBound:
    """Kakade & Langford conservative-policy-iteration bound for a mixture policy.

    Attributes
    ----------
    mixture : ndarray, shape (S, A)
        ``pi_new = (1 - alpha) pi + alpha pi_prime``.
    expected_return : float
        Exact ``J(pi_new)``.
    policy_advantage : float
        ``A_pi(pi_prime) = E_{s ~ d_pi}[sum_a pi_prime(a|s) A_pi(s, a)]`` (normalized ``d``,
        unnormalized ``A``; reward units).
    epsilon : float
        ``max_s |sum_a pi_prime(a|s) A_pi(s, a)|``.
    bound : float
        ``J(pi) + alpha A_pi(pi') / (1 - gamma)
        - 2 alpha^2 gamma eps / ((1 - gamma)(1 - gamma (1 - alpha)))`` (Theorem 4.1 in
        unnormalized units).
    simplified_bound : float
        ``L_pi(pi_new) - 2 eps gamma alpha^2 / (1 - gamma)^2`` (TRPO Eq. (6)), which is
        never larger than ``bound``.
    """

    mixture: np.ndarray
    expected_return: float
    policy_advantage: float
    epsilon: float
    bound: float
    simplified_bound: float


def cpi_lower_bound(mdp: TabularMDP, pi, pi_prime, alpha: float, *,
                    atol: float = DEFAULT_ATOL) -> CPIBound:
    """Conservative policy iteration bound for ``pi_new = (1 - alpha) pi + alpha pi_prime``.

    Kakade & Langford state it for values normalized by ``(1 - gamma)``; in the unnormalized
    units used here (``J = mu . V``) it reads
    ``J(pi_new) - J(pi) >= alpha A_pi(pi') / (1 - gamma)
    - 2 alpha^2 gamma eps / ((1 - gamma)(1 - gamma(1 - alpha)))``.

    Parameters
    ----------
    pi, pi_prime : array_like, shape (S, A)
    alpha : float
        Mixture weight in [0, 1].

    Returns
    -------
    CPIBound

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.
    InvalidArgumentError
        ``alpha`` outside [0, 1].

    References
    ----------
    Kakade & Langford (2002), "Approximately optimal approximate reinforcement learning",
    ICML, Theorem 4.1; restated in Schulman et al. (2015), arXiv:1502.05477v5, Eq. (6).
    """
    a = check_unit_interval(alpha, "alpha")
    p = mdp.check_policy(pi, atol=atol)
    pp = mdp.check_policy(pi_prime, name="pi_prime", atol=atol)
    g = mdp.gamma
    v, adv, rho = _values_and_advantages(mdp, p)
    gain = np.einsum("sa,sa->s", pp, adv)
    policy_adv = float((1.0 - g) * rho @ gain)
    eps = float(np.abs(gain[~mdp.terminal]).max())
    j_old = float(mdp.mu @ v)
    mix = (1.0 - a) * p + a * pp
    v_mix = solve_bellman(mdp, mdp.transition_matrix(mix), mdp.policy_reward(mix), discount=g)
    bound = (j_old + a * policy_adv / (1.0 - g)
             - 2.0 * a * a * g * eps / ((1.0 - g) * (1.0 - g * (1.0 - a))))
    L_mix = j_old + a * float(rho @ gain)
    simplified = L_mix - 2.0 * eps * g * a * a / (1.0 - g) ** 2
    return CPIBound(mixture=mix, expected_return=float(mdp.mu @ v_mix),
                    policy_advantage=policy_adv, epsilon=eps, bound=float(bound),
                    simplified_bound=float(simplified))


@dataclasses.dataclass(frozen=True)
class CPOBound:
    """Achiam et al. (2017) lower bound with the expected (not maximal) TV.

    Attributes
    ----------
    expected_return : float
        Exact ``J(pi_new)``.
    epsilon : float
        ``max_s |sum_a pi_new(a|s) A_pi(s, a)|``.
    mean_tv : float
        ``E_{s ~ d_pi}[TV(pi_new(.|s), pi(.|s))]``.
    bound : float
        ``J(pi) + (1/(1-gamma)) E_{s ~ d_pi, a ~ pi_new}[A_pi(s, a)]
        - 2 gamma eps mean_tv / (1 - gamma)^2``.
    """

    expected_return: float
    epsilon: float
    mean_tv: float
    bound: float


def cpo_lower_bound(mdp: TabularMDP, pi, pi_new, *, atol: float = DEFAULT_ATOL) -> CPOBound:
    """Constrained-policy-optimization bound (expected TV under ``d_pi``).

    ``J(pi_new) - J(pi) >= (1/(1-gamma)) E_{s ~ d_pi, a ~ pi_new}[A_pi(s, a)
    - (2 gamma eps / (1 - gamma)) TV(pi_new, pi)[s]]``,
    ``eps = max_s |E_{a ~ pi_new}[A_pi(s, a)]|``.

    Returns
    -------
    CPOBound

    Raises
    ------
    InvalidPolicyError, SolverError
        As :func:`pgtheory.state_values`.

    References
    ----------
    Achiam, Held, Tamar & Abbeel (2017), "Constrained policy optimization", ICML,
    arXiv:1705.10528, Corollary 1.
    """
    p = mdp.check_policy(pi, atol=atol)
    q = mdp.check_policy(pi_new, name="pi_new", atol=atol)
    g = mdp.gamma
    v, adv, rho = _values_and_advantages(mdp, p)
    d = (1.0 - g) * rho
    gain = np.einsum("sa,sa->s", q, adv)
    eps = float(np.abs(gain[~mdp.terminal]).max())
    tv = 0.5 * np.abs(p - q).sum(axis=1) * (~mdp.terminal)
    mean_tv = float(d @ tv)
    bound = float(mdp.mu @ v) + (float(d @ gain) - 2.0 * g * eps * mean_tv / (1.0 - g)) / (1.0 - g)
    v_new = solve_bellman(mdp, mdp.transition_matrix(q), mdp.policy_reward(q), discount=g)
    return CPOBound(expected_return=float(mdp.mu @ v_new), epsilon=eps, mean_tv=mean_tv,
                    bound=float(bound))
