"""pytest plugin (entry point ``pytest11``): ``pytest --pg-target TARGET`` and oracle fixtures.

``pytest --pg-target MODULE:ATTR`` runs the whole oracle suite (:mod:`pgtheory.oracles.suite`)
against the target, one test per check (skips say why). Without explicit test paths only the suite
runs; with paths, the suite is added to them. Options: ``--pg-seed N`` (default 0: fixed seeds,
reproducible verdicts; vary it to draw new oracle MDPs and rollouts) and ``--pg-quick``.

Fixtures for users' own tests (all seeded by ``--pg-seed``):

* ``tabular_mdp`` -- the suite's oracle MDP (5 states, 2 actions, one terminal, gamma 0.9);
* ``tabular_env`` -- a gymnasium env simulating it, with a time limit of 6 steps;
* ``lqr_model`` -- the double-integrator :class:`pgtheory.lqr.LQRModel`;
* ``exact`` -- :class:`ExactOracle` for ``tabular_mdp`` (exact V, Q, A, d, J, gradients);
* ``pg_target`` -- the loaded ``--pg-target`` (skips the test when none is given).

pytest loads this module in every session of an environment where pgtheory is installed, so
importing it must never fail and must stay cheap: it imports pytest and the (lazy) ``pgtheory``
package only. numpy, torch and gymnasium are imported inside the hooks and fixtures that use
them; with ``--pg-target`` but without the ``oracles`` extra, pytest stops with one usage error
naming ``pip install 'pgtheory[oracles]'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

import pgtheory as pg  # lazy (PEP 562): no numpy or scipy until a name is used
from pgtheory.extras import MissingExtraError, require

if TYPE_CHECKING:
    import numpy as np

SUITE_FILE = Path(__file__).with_name("_suite_tests.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgtheory", "pgtheory oracles")
    group.addoption("--pg-target", default=None, metavar="MODULE:ATTR",
                    help="run the oracle suite against this implementation-under-test target")
    group.addoption("--pg-seed", type=int, default=0,
                    help="seed of the oracle MDPs, agents and statistical checks (default 0)")
    group.addoption("--pg-quick", action="store_true",
                    help="fewer trials and iterations (faster, less power)")
    group.addoption("--pg-threads", type=int, default=1, metavar="N",
                    help="torch CPU threads while the suite runs (default 1, as pgtheory audit: "
                         "fastest for the oracles' small networks)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "pg_oracle: a check of the pgtheory oracle suite")
    if config.getoption("--pg-target") is None:
        return
    try:
        require("oracles", "pytest --pg-target")
    except MissingExtraError as exc:
        raise pytest.UsageError(str(exc)) from None
    threads = config.getoption("--pg-threads")
    if threads < 1:
        raise pytest.UsageError(f"--pg-threads: expected a positive integer, received {threads}")
    import torch

    torch.set_num_threads(threads)
    suite = str(SUITE_FILE)
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        if suite not in config.args:
            config.args.append(suite)
    else:
        config.args[:] = [suite]


class ExactOracle:
    """Exact quantities of one :class:`pgtheory.TabularMDP` for users' tests.

    Every method takes a policy table ``pi`` of shape (S, A) and delegates to
    :mod:`pgtheory` (float64): ``state_values``, ``action_values``, ``advantages``,
    ``discounted_visitation``, ``on_policy_distribution``, ``expected_return``, and
    ``optimal_return`` (policy iteration). Values are in reward units, visitations sum to 1.

    Raises
    ------
    InvalidPolicyError
        ``pi`` is not a stochastic (S, A) matrix (from :mod:`pgtheory`).

    References
    ----------
    The delegated :mod:`pgtheory` functions' references.
    """

    def __init__(self, mdp: pg.TabularMDP) -> None:
        self.mdp = mdp

    def state_values(self, pi) -> np.ndarray:
        return pg.state_values(self.mdp, pi)

    def action_values(self, pi) -> np.ndarray:
        return pg.action_values(self.mdp, pi)

    def advantages(self, pi) -> np.ndarray:
        return pg.advantages(self.mdp, pi)

    def discounted_visitation(self, pi) -> np.ndarray:
        return pg.discounted_visitation(self.mdp, pi)

    def on_policy_distribution(self, pi, time_limit: int | None = None) -> np.ndarray:
        return pg.on_policy_distribution(self.mdp, pi, time_limit=time_limit)

    def expected_return(self, pi) -> float:
        return float(pg.expected_return(self.mdp, pi))

    def optimal_return(self) -> float:
        return float(pg.expected_return(self.mdp, pg.policy_iteration(self.mdp).policy))


@pytest.fixture
def tabular_mdp(request: pytest.FixtureRequest) -> pg.TabularMDP:
    from pgtheory.oracles.suite import oracle_mdp

    return oracle_mdp(0.9, request.config.getoption("--pg-seed"))


@pytest.fixture
def tabular_env(tabular_mdp: pg.TabularMDP):
    import gymnasium as gym
    from pgtheory.oracles.envs import TabularEnv

    env = gym.wrappers.TimeLimit(TabularEnv(tabular_mdp), 6)
    yield env
    env.close()


@pytest.fixture
def lqr_model():
    from pgtheory import lqr

    return lqr.double_integrator()


@pytest.fixture
def exact(tabular_mdp: pg.TabularMDP) -> ExactOracle:
    return ExactOracle(tabular_mdp)


@pytest.fixture(scope="session")
def pg_target(request: pytest.FixtureRequest):
    from pgtheory.oracles.audit import resolve_target

    spec = request.config.getoption("--pg-target")
    if spec is None:
        pytest.skip("no --pg-target given")
    return resolve_target(spec)
