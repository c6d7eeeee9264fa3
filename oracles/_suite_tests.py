"""The oracle suite as pytest tests (collected by the plugin when ``--pg-target`` is given)."""

from __future__ import annotations

import pytest
from pgtheory.oracles.audit import resolve_target
from pgtheory.oracles.suite import SuiteConfig, plan, run_suite


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "check_name" in metafunc.fixturenames:
        spec = metafunc.config.getoption("--pg-target")
        names = [n for n, _ in plan(resolve_target(spec))] if spec else []
        metafunc.parametrize("check_name", names)


@pytest.fixture(scope="session")
def suite_results(pg_target, request: pytest.FixtureRequest) -> dict:
    seed = request.config.getoption("--pg-seed")
    cfg = SuiteConfig.quick(seed) if request.config.getoption("--pg-quick") else SuiteConfig(
        seed=seed)
    return {r.name: r for r in run_suite(pg_target, config=cfg)}


@pytest.mark.pg_oracle
def test_oracle(check_name: str, suite_results: dict) -> None:
    result = suite_results[check_name]
    if result.verdict == "skip":
        pytest.skip(f"{check_name}: not applicable: {result.explanation}")
    if result.verdict == "inconclusive":  # the premise did not hold: no verdict either way
        pytest.skip(f"{check_name}: INCONCLUSIVE: {result.explanation}")
    result.assert_ok()
