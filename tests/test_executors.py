"""The campaign executors (lab/executors.py): the same outcomes locally and on Ray.

Every test runs on both executors: :class:`LocalExecutor` (worker processes) and
:class:`RayExecutor` on a local Ray started for this module (two CPUs) and shut down after.
The jobs are the tiny top-level functions below (the workers import this module by name);
the power run is exercised through :func:`pgtheory.lab.power.run_jobs` with its job function
replaced by :func:`fake_run_job`, which returns a real audit record of a made-up report.

Kept light on imports: each local worker process imports this module afresh.
"""

from __future__ import annotations

import _thread
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest
from pgtheory.lab import executors, power
from pgtheory.lab.executors import ExecutorError, JobLost, LocalExecutor, RayExecutor


# ------------------------------------------------------------------------------ job functions
def square(x: int) -> int:
    return x * x


def refuse(x: int) -> int:
    raise ValueError(f"expected an even x, received {x}")


def _attempt(folder: str, key: str) -> int:
    """Count this attempt of job ``key`` in ``folder`` (one file per attempt); 1-based."""
    n = 1
    while True:
        try:
            fd = os.open(os.path.join(folder, f"{key}.{n}"), os.O_CREAT | os.O_EXCL)
            os.close(fd)
            return n
        except FileExistsError:
            n += 1


def crash_first(folder: str, key: str, crashes: int) -> tuple[str, int]:
    """Kill its own worker process on its first ``crashes`` attempts, then return."""
    n = _attempt(folder, key)
    if n <= crashes:
        os._exit(3)
    return key, n


def lose_first(folder: str, key: str, losses: int) -> tuple[str, int]:
    """Report its work lost (:class:`JobLost`, as when an audit subprocess is killed) on its
    first ``losses`` attempts."""
    n = _attempt(folder, key)
    if n <= losses:
        raise JobLost(f"attempt {n} killed by signal 9")
    return key, n


def hang_with_child(folder: str, key: str) -> None:
    """Start a subprocess, note its pid (``KEY.N.pid`` on attempt N), then wait until killed."""
    n = _attempt(folder, key)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(folder, f"{key}.{n}.pid").write_text(str(child.pid))
    time.sleep(600)


def _either(kind: str, folder: str):
    return hang_with_child(folder, "hang") if kind == "hang" else crash_first(folder, kind, 0)


def fake_run_job(job: tuple, scope: str, commit: str) -> dict:
    """Stands in for :func:`pgtheory.lab.power.run_job`: a real record of a made-up report,
    whose verdicts depend on the job only and whose timings vary from run to run. A target
    named ``crash`` kills its worker every time; seed 2 of ``a2c`` on its first attempt;
    ``trpo`` takes 2 s."""
    folder = os.environ[ATTEMPTS]
    n = _attempt(folder, "-".join(map(str, job)))
    if job[1] == "crash" or (job[1:] == ("a2c", 2) and n == 1):
        os._exit(9)
    if job[1] == "trpo":  # a slow one (the Ctrl-C test interrupts it)
        Path(folder, f"{job[1]}-{job[2]}.pid").write_text(str(os.getpid()))
        time.sleep(2)
    if job[0] == "mutant":
        flagged = [["components.gae", "components"]] if len(job[1]) % 2 else []
        return {"mutant": job[1], "flagged": flagged, "seconds": time.time() % 7,
                "error": "", "commit": commit, "date": "2026-11-30"}
    h = zlib.crc32(f"{job[1]}:{job[2]}".encode())
    names = [f"layer.check_{i}" for i in range(4)]
    verdict = {names[0]: "fail" if h % 3 == 0 else "pass", names[1]: "inconclusive" if h % 2
               else "pass", names[2]: "pass", names[3]: "skipped"}
    report = {"target": job[1], "seed": job[2], "exit_code": int(verdict[names[0]] == "fail"),
              "seconds": time.time() % 11,
              "results": [{"name": k, "verdict": v, "explanation": f"{k} {v} {h % 100}"}
                          for k, v in verdict.items()]}
    return power.audit_record(report, scope=scope, wall_s=time.time() % 13, commit=commit)


# ---------------------------------------------------------------------------------- fixtures
ATTEMPTS = "PGTHEORY_TEST_ATTEMPTS"  # where fake_run_job counts attempts


@pytest.fixture(scope="module")
def attempts_dir(tmp_path_factory):
    """A folder named by the environment before Ray starts (its workers keep that
    environment); each power-run test empties it first."""
    folder = tmp_path_factory.mktemp("attempts")
    before = os.environ.get(ATTEMPTS)
    os.environ[ATTEMPTS] = str(folder)
    yield folder
    if before is None:
        os.environ.pop(ATTEMPTS, None)
    else:
        os.environ[ATTEMPTS] = before


@pytest.fixture(scope="module")
def ray_session(attempts_dir):
    """A local Ray of two CPUs for this module; its workers import this module by name (as
    the local executor's worker processes do), so its folder goes on their PYTHONPATH."""
    ray = pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    here = str(Path(__file__).parent)
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=80 * 2**20,
             log_to_driver=False, runtime_env={"env_vars": {
                 "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH"))
                                               if p),
                 ATTEMPTS: str(attempts_dir)}})
    yield ray
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def make(request):
    """``make(**settings)``: an executor of the parametrized kind, two jobs at a time."""
    if request.param == "ray":
        request.getfixturevalue("ray_session")
        return lambda **kw: RayExecutor(jobs=2, **kw)
    return lambda **kw: LocalExecutor(2, **kw)


def _gone(pid: int, within: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``within`` seconds."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------------- executors
def test_values_and_exceptions(make) -> None:
    outs = list(make().map_unordered(square, [(3,), (4,), (5,)]))
    assert sorted((o.job, o.value, o.attempts, o.error) for o in outs) == [
        ((3,), 9, 1, None), ((4,), 16, 1, None), ((5,), 25, 1, None)]
    (out,) = make(max_retries=3).map_unordered(refuse, [(7,)])
    # an exception is the job's answer: one line, not retried
    assert not out.ok and out.attempts == 1 and out.value is None
    assert out.error == "ValueError: expected an even x, received 7"


def test_a_killed_worker_is_retried(make, tmp_path) -> None:
    jobs = [(str(tmp_path), "once", 1), (str(tmp_path), "twice", 2), (str(tmp_path), "never", 0)]
    outs = {o.job[1]: o for o in make(max_retries=2).map_unordered(crash_first, jobs)}
    assert {k: (o.value, o.attempts, o.error) for k, o in outs.items()} == {
        "once": (("once", 2), 2, None), "twice": (("twice", 3), 3, None),
        "never": (("never", 1), 1, None)}


def test_a_lost_job_is_retried(make, tmp_path) -> None:
    (out,) = make(max_retries=1).map_unordered(lose_first, [(str(tmp_path), "job", 1)])
    assert out.ok and out.value == ("job", 2) and out.attempts == 2


def test_past_the_retry_bound_the_job_is_an_error_not_dropped(make, tmp_path) -> None:
    outs = list(make(max_retries=1).map_unordered(crash_first, [(str(tmp_path), "doomed", 99)]))
    outs += list(make(max_retries=1).map_unordered(lose_first, [(str(tmp_path), "lost", 99)]))
    outs += list(make(max_retries=0).map_unordered(square, [(2,)]))
    assert len(outs) == 3
    doomed, lost, ok = outs
    assert doomed.error == "worker lost (attempt 2 of 2)" and doomed.attempts == 2
    assert doomed.detail  # what the executor saw: an exit code, or Ray's exception
    assert lost.error == "worker lost (attempt 2 of 2)"
    assert lost.detail == "attempt 2 killed by signal 9"
    assert ok.value == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doomed.1", "doomed.2", "lost.1",
                                                          "lost.2"]


def test_no_retries_means_one_attempt(make, tmp_path) -> None:
    (out,) = make(max_retries=0).map_unordered(crash_first, [(str(tmp_path), "once", 1)])
    assert out.error == "worker lost (attempt 1 of 1)" and out.attempts == 1


def test_a_timeout_kills_the_worker_and_its_subprocesses(make, tmp_path) -> None:
    # 10 s: under load a Ray task can take more than 3 s from submission to its first line
    # (the timeout counts from submission), and the job must have started to be checked
    ex = make(timeout_s=10, max_retries=1)
    outs = list(ex.map_unordered(hang_with_child, [(str(tmp_path), "hang")]))
    assert [(o.error, o.attempts) for o in outs] == [("timed out after 10 s (attempt 2 of 2)", 2)]
    pids = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    assert len(pids) >= 1 and all(_gone(p) for p in pids), pids


def test_closing_the_outcomes_stops_the_running_jobs(make, tmp_path) -> None:
    # what run_jobs does on Ctrl-C: it closes the outcomes it was consuming
    outs = make().map_unordered(_either, [("hang", str(tmp_path)), ("quick", str(tmp_path))])
    first = next(outs)
    assert first.value == ("quick", 1)
    end = time.monotonic() + 60
    while not list(tmp_path.glob("*.pid")) and time.monotonic() < end:
        time.sleep(0.1)
    (pid,) = [int(p.read_text()) for p in tmp_path.glob("*.pid")]
    outs.close()
    assert _gone(pid)
    assert list(outs) == []  # closed: nothing more is started or yielded


def test_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(ExecutorError, match="expected jobs >= 1, received 0"):
        LocalExecutor(0)
    with pytest.raises(ExecutorError, match="expected max_retries >= 0, received -1"):
        LocalExecutor(2, max_retries=-1)
    with pytest.raises(ExecutorError, match="expected a timeout >= 0 seconds, received -5"):
        RayExecutor(timeout_s=-5)
    with pytest.raises(ExecutorError, match="expected GPUs per job only with --ray"):
        executors.make_executor(num_gpus_per_job=1)


# ------------------------------------------------------------------------------ the power run
def _campaign(folder: Path, make, monkeypatch, attempts: Path) -> power.Records:
    for p in attempts.iterdir():
        p.unlink()
    monkeypatch.setattr(power, "run_job", fake_run_job)
    rec = power.Records(folder / "records")
    power.run_jobs(rec, mutants=["gae_lambda_power", "adv_sign"], targets=["ppo", "a2c",
                                                                            "crash"],
                   seeds=[1, 2], campaign=power.campaign_jobs(2, ["ppo", "sb3-a2c"]), timing=1,
                   progress=False, executor=make(max_retries=1))
    return rec


def _comparable(rec: power.Records) -> dict:
    out = {kind: sorted(json.dumps(power.comparable(r), sort_keys=True) for r in rec.load(kind))
           for kind in ("mutants", "audits", "campaign", "timings")}
    return {**out, "plans": rec.plans()}


def test_the_same_campaign_gives_the_same_records_on_both_executors(
        tmp_path, monkeypatch, attempts_dir, ray_session) -> None:
    local = _campaign(tmp_path / "local", lambda **kw: LocalExecutor(2, **kw), monkeypatch,
                      attempts_dir)
    ray = _campaign(tmp_path / "ray", lambda **kw: RayExecutor(jobs=2, **kw), monkeypatch,
                    attempts_dir)
    a, b = _comparable(local), _comparable(ray)
    assert a == b
    assert [len(a[k]) for k in ("mutants", "audits", "campaign", "timings")] == [2, 6, 4, 3]
    # the timings differ (so comparing them would be wrong) ...
    walls = [{(r["target"], r["seed"]): r["wall_s"] for r in x.load("audits")}
             for x in (local, ray)]
    assert walls[0] != walls[1]
    # ... and a job that always kills its worker is recorded as an error, never dropped
    crashed = [r for r in local.audits() if r["target"] == "crash"]
    assert sorted((r["seed"], r["exit_code"], r["error"]) for r in crashed) == [
        (1, None, "worker lost (attempt 2 of 2)"), (2, None, "worker lost (attempt 2 of 2)")]
    assert all(r["error_detail"] for r in crashed)
    # a2c seed 2 lost its first worker and was run again, on both executors
    for x in (local, ray):
        assert any(r["target"] == "a2c" and r["seed"] == 2 and r["exit_code"] is not None
                   for r in x.audits())
    # campaign records carry their family, index and configuration
    assert {(r["family"], r["index"]) for r in local.audits("campaign")} == {
        ("ppo", 1), ("ppo", 2), ("sb3-a2c", 1), ("sb3-a2c", 2)}


def test_ctrl_c_keeps_whole_records_and_the_rerun_resumes(tmp_path, monkeypatch) -> None:
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    monkeypatch.setenv(ATTEMPTS, str(attempts))
    monkeypatch.setattr(power, "run_job", fake_run_job)
    rec = power.Records(tmp_path / "records")
    kw = dict(mutants=[], targets=["ppo", "reinforce", "trpo"], seeds=[1, 2], progress=False)

    def interrupt_the_slow_job():  # the third, after two records
        while not (attempts / "trpo-1.pid").exists():
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_the_slow_job, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        power.run_jobs(rec, executor=LocalExecutor(1), **kw)
    kept = rec.load("audits")  # whole lines only (load raises on a broken one)
    assert len(kept) == 2
    assert _gone(int((attempts / "trpo-1.pid").read_text()))  # its worker was killed
    assert power.run_jobs(rec, executor=LocalExecutor(2), **kw) == 6 - len(kept)
    assert sorted((r["target"], r["seed"]) for r in rec.load("audits")) == sorted(
        (t, s) for t in kw["targets"] for s in kw["seeds"])


def test_a_killed_audit_subprocess_is_a_lost_job() -> None:
    killed = subprocess.run([sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    with pytest.raises(JobLost, match="the audit was killed by signal 9"):
        power._lost(killed, "the audit")
    power._lost(subprocess.run([sys.executable, "-c", "raise SystemExit(3)"]), "the audit")


def test_an_address_nothing_answers_at_fails_fast() -> None:
    import socket

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        executors.check_address(f"127.0.0.1:{port}")  # something answers
        executors.check_address(f"ray://127.0.0.1:{port}")
    with pytest.raises(ExecutorError, match=f"expected a Ray cluster at 127.0.0.1:{port}, "
                                            "received no answer"):
        executors.check_address(f"127.0.0.1:{port}")  # closed now
    executors.check_address("auto")  # left to Ray


def test_ray_address_from_the_environment_is_checked_too(monkeypatch) -> None:
    # --ray without --ray-address: Ray reads RAY_ADDRESS, and used to retry it for minutes
    pytest.importorskip("ray")
    with socket_closed_port() as port:
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        with pytest.raises(ExecutorError, match="received no answer"):
            executors.make_executor(ray=True)


def socket_closed_port():
    """A context giving a TCP port on 127.0.0.1 that nothing listens at."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port

    return closed()
