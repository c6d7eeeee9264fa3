"""Where a campaign's jobs run: worker processes on this machine, or Ray tasks.

The project's measurements are grids of independent jobs (the power run's audits and mutants,
the configuration campaign, the returns benchmark's training runs). Each campaign hands its
jobs to an :class:`Executor` and writes a record as each :class:`Outcome` comes back:

* :class:`LocalExecutor` (the default; nothing to install): one fresh worker process per job
  attempt, ``jobs`` of them at a time, on this machine;
* :class:`RayExecutor` (``pip install 'pgtheory[ray]'``): one Ray task per job attempt, with
  declared resources (one CPU, optionally GPUs), on a local Ray started for the run or on an
  existing cluster.

Both give the same outcomes for the same jobs. A job is ``fn(*args)`` with ``fn`` a top-level
(importable) function and ``args`` picklable; its return value must be picklable too.

Failures, the same in both executors:

* **worker lost**: the process running the job died (killed, out of memory, a crashed
  interpreter, a lost Ray node), or the job raised :class:`JobLost` (its own subprocess was
  killed): the job is run again, at most ``max_retries`` more times;
* **timeout**: the job ran longer than ``timeout_s`` seconds: its worker (and the worker's
  subprocesses) is killed and the job run again, within the same bound;
* **exception**: ``fn`` raised any other exception: not retried (running it again would raise
  again); the outcome carries the exception's one-line description.

After the last attempt the job still yields an :class:`Outcome`, with ``error`` set: nothing is
dropped. Closing the iterator of :meth:`Executor.map_unordered` (or Ctrl-C while it is
consumed) kills the running workers and submits nothing more; outcomes already consumed (and
the records written from them) are kept.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Executor", "ExecutorError", "JobLost", "LocalExecutor", "Outcome", "RayExecutor",
           "check_address", "make_executor"]


class ExecutorError(ValueError):
    """Bad executor settings (``jobs < 1``, a negative timeout or retry count)."""


class JobLost(Exception):
    """Raised by a job function when the work it ran was lost (for example its subprocess was
    killed by a signal): the executor treats the job like a lost worker and runs it again."""


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The end of one job.

    Attributes
    ----------
    job : tuple
        The job's arguments, as given to :meth:`Executor.map_unordered`.
    value : object
        ``fn(*job)`` when the job finished, else None.
    error : str or None
        None when the job finished; else one line saying what happened on its last attempt,
        worded the same by both executors: ``worker lost (attempt 3 of 3)``, ``timed out after
        S s (attempt 3 of 3)``, or the exception the job raised (``ValueError: ...``).
    detail : str or None
        For a lost worker, what the executor saw (an exit code, Ray's exception); it differs
        between executors and machines.
    attempts : int
        Attempts made (1 when the first one finished).
    """

    job: tuple
    value: Any = None
    error: str | None = None
    attempts: int = 1
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class _Attempt:
    job: tuple
    number: int
    deadline: float
    handle: Any = None  # the worker process (local) or the task's object ref (Ray)


class Executor:
    """Runs independent jobs, yielding each one's :class:`Outcome` as it ends.

    Parameters
    ----------
    timeout_s : float or None
        Seconds one attempt may run before its worker is killed (None or 0: no limit).
    max_retries : int
        Further attempts after a lost worker or a timeout (>= 0).
    """

    name = "executor"

    def __init__(self, *, timeout_s: float | None = None, max_retries: int = 2) -> None:
        if timeout_s is not None and not timeout_s >= 0:
            raise ExecutorError(f"expected a timeout >= 0 seconds, received {timeout_s}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ExecutorError(f"expected max_retries >= 0, received {max_retries!r}")
        self.timeout_s = timeout_s or None
        self.max_retries = max_retries

    # the loop shared by both executors; subclasses start, wait for and kill attempts
    def map_unordered(self, fn: Callable[..., Any], jobs: Iterable[tuple]) -> Iterator[Outcome]:
        """Run ``fn(*job)`` for every job; yield the :class:`Outcome` of each as it ends (in
        the order they end). Close the iterator to stop: running workers are killed."""
        return self._loop(fn, [tuple(j) for j in jobs])

    def _loop(self, fn, jobs: list[tuple]) -> Iterator[Outcome]:
        queue = collections.deque((job, 1) for job in jobs)
        running: list[_Attempt] = []
        if not queue:
            return
        self._open()
        try:
            while queue or running:
                while queue and len(running) < self._capacity():
                    job, number = queue.popleft()
                    deadline = time.monotonic() + self.timeout_s if self.timeout_s else math.inf
                    attempt = _Attempt(job, number, deadline)
                    attempt.handle = self._start(fn, job)
                    running.append(attempt)
                soonest = min(a.deadline for a in running)
                wait_s = None if soonest == math.inf else max(0.0, soonest - time.monotonic())
                for attempt, (kind, payload) in self._wait(running, wait_s):
                    running.remove(attempt)
                    out = self._settle(attempt, kind, payload, queue)
                    if out is not None:
                        yield out
                now = time.monotonic()
                for attempt in [a for a in running if a.deadline <= now]:
                    running.remove(attempt)
                    self._kill(attempt)
                    out = self._settle(attempt, "timeout", None, queue)
                    if out is not None:
                        yield out
        finally:  # finished, closed by the consumer, or interrupted: no worker left behind
            for attempt in running:
                self._kill(attempt)
            self._close()

    def _settle(self, attempt: _Attempt, kind: str, payload, queue) -> Outcome | None:
        if kind == "ok":
            return Outcome(attempt.job, payload, None, attempt.number)
        if kind == "raised":
            return Outcome(attempt.job, None, payload, attempt.number)
        if attempt.number <= self.max_retries:  # lost or timed out: run it again
            queue.append((attempt.job, attempt.number + 1))
            return None
        what = "worker lost" if kind == "lost" else f"timed out after {self.timeout_s:g} s"
        return Outcome(attempt.job, None,
                       f"{what} (attempt {attempt.number} of {self.max_retries + 1})",
                       attempt.number, payload)

    # ---- what each executor provides
    def _open(self) -> None:
        pass

    def _close(self) -> None:
        pass

    def _capacity(self) -> int:
        raise NotImplementedError

    def _start(self, fn, job: tuple):
        raise NotImplementedError

    def _wait(self, running: list[_Attempt], timeout: float | None):
        """``(attempt, (kind, payload))`` for the attempts that ended within ``timeout``;
        kind is ``ok``, ``raised`` or ``lost``."""
        raise NotImplementedError

    def _kill(self, attempt: _Attempt) -> None:
        raise NotImplementedError


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _call(fn, job: tuple) -> tuple[str, Any]:
    """Run one job where the worker runs it; ``("ok", value)``, ``("lost", why)`` or
    ``("raised", why)``."""
    try:
        return "ok", fn(*job)
    except JobLost as exc:
        return "lost", " ".join(str(exc).split()) or "the job's process was lost"
    except Exception as exc:
        return "raised", _one_line(exc)


def _local_worker(conn, fn, job: tuple) -> None:
    """Body of a local worker process: its own process group (so that a timeout or Ctrl-C
    kills the job's subprocesses with it), one job, the result sent back."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it kills the group
    result = _call(fn, job)
    try:
        conn.send(result)
    except Exception as exc:  # an unpicklable return value
        conn.send(("raised", f"the job's return value could not be sent back ({_one_line(exc)})"))
    conn.close()


class LocalExecutor(Executor):
    """Worker processes on this machine: one fresh process per job attempt, ``jobs`` at a time.

    Each attempt is a new process (``multiprocessing``, ``start_method``: ``"spawn"`` by
    default, which imports ``fn``'s module afresh and shares no state with the caller) in its
    own process group; a timeout or a closed iterator kills the group, subprocesses included.
    A worker that exits without sending a result (killed, ``os._exit``, a crash) is a lost
    worker. Resources: each job gets one process; CPU threads are the job's business (the
    project's jobs use one torch thread); no GPU scheduling.

    Parameters
    ----------
    jobs : int
        Jobs at a time (>= 1).
    timeout_s, max_retries
        See :class:`Executor`.
    start_method : str
        ``multiprocessing`` start method (``"spawn"``, ``"forkserver"`` or ``"fork"``).

    Raises
    ------
    ExecutorError
        ``jobs < 1``, a negative timeout or retry count.
    """

    name = "local"

    def __init__(self, jobs: int = 2, *, timeout_s: float | None = None, max_retries: int = 2,
                 start_method: str = "spawn") -> None:
        super().__init__(timeout_s=timeout_s, max_retries=max_retries)
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise ExecutorError(f"expected jobs >= 1, received {jobs!r}")
        self.jobs = jobs
        self.start_method = start_method
        self._ctx = multiprocessing.get_context(start_method)

    def _capacity(self) -> int:
        return self.jobs

    def _start(self, fn, job):
        recv, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(target=_local_worker, args=(send, fn, job))
        proc.start()
        send.close()  # the child's end: EOF here once the child has gone
        return proc, recv

    def _wait(self, running, timeout):
        by_conn = {a.handle[1]: a for a in running}
        for conn in multiprocessing.connection.wait(list(by_conn), timeout):
            attempt = by_conn[conn]
            proc = attempt.handle[0]
            try:
                result = conn.recv()
            except (EOFError, OSError):
                proc.join(5)
                result = ("lost", f"the worker process ended without a result (exit code "
                                  f"{proc.exitcode})")
            conn.close()
            proc.join(30)
            if proc.is_alive():  # sent its result but will not exit: end it
                self._kill(attempt)
            yield attempt, result

    def _kill(self, attempt):
        proc, conn = attempt.handle
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):  # not yet its own group leader, or gone
            proc.kill()
        proc.join()
        conn.close()


class RayExecutor(Executor):
    """Ray tasks: one task per job attempt, with declared resources.

    Imports Ray only when jobs are run. Connects to ``address`` (an existing cluster: ``auto``,
    ``HOST:PORT`` or ``ray://HOST:10001``), or, when ``address`` is None, to the cluster named
    by the ``RAY_ADDRESS`` environment variable, else starts a local Ray for the run and shuts
    it down after. If Ray is already initialized in this process it is used as it is.

    Every node must have the same pgtheory installed (the job functions are imported there by
    name). Tasks run with Ray's own retries off; retries and timeouts are this executor's
    (:class:`Executor`): a lost worker or node is a lost worker, a timeout cancels the task
    with ``ray.cancel(force=True)`` (which kills its worker process and that process's
    children). The timeout counts from submission; at most ``jobs`` tasks are in flight
    (default: the cluster's CPUs divided by ``num_cpus_per_job``), so a task starts about when
    it is submitted.

    Parameters
    ----------
    address : str or None
        The cluster to connect to (None: ``RAY_ADDRESS`` or a local Ray).
    num_cpus_per_job, num_gpus_per_job : float
        Resources each task declares (Ray schedules by them).
    jobs : int or None
        Tasks in flight at most (None: what the cluster's CPUs hold).
    timeout_s, max_retries
        See :class:`Executor`.
    init_kwargs : dict or None
        Further keywords for ``ray.init`` when this executor initializes Ray.

    Raises
    ------
    ExecutorError
        Bad resources, ``jobs < 1``, a negative timeout or retry count.
    pgtheory.extras.MissingExtraError
        When jobs are run and Ray is not installed (``pip install 'pgtheory[ray]'``).
    """

    name = "ray"

    def __init__(self, address: str | None = None, *, num_cpus_per_job: float = 1,
                 num_gpus_per_job: float = 0, jobs: int | None = None,
                 timeout_s: float | None = None, max_retries: int = 2,
                 init_kwargs: dict | None = None) -> None:
        super().__init__(timeout_s=timeout_s, max_retries=max_retries)
        if not num_cpus_per_job >= 0 or not num_gpus_per_job >= 0 or \
                num_cpus_per_job + num_gpus_per_job <= 0:
            raise ExecutorError(f"expected CPUs and GPUs per job >= 0, not both 0, received "
                                f"{num_cpus_per_job} and {num_gpus_per_job}")
        if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
            raise ExecutorError(f"expected jobs >= 1 or None, received {jobs!r}")
        self.address = address
        self.num_cpus_per_job = num_cpus_per_job
        self.num_gpus_per_job = num_gpus_per_job
        self.jobs = jobs
        self.init_kwargs = dict(init_kwargs or {})
        self._ray = self._task = None
        self._started = False
        self._cap = 1

    def _open(self):
        from pgtheory.extras import require

        require("ray", "running jobs on Ray (--ray)")
        import ray

        self._ray = ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address,
                         **{"include_dashboard": False, **self.init_kwargs})
            except (ConnectionError, RuntimeError) as exc:  # no cluster where one was named
                where = self.address or os.environ.get("RAY_ADDRESS")
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ExecutorError(f"expected a running Ray cluster at {where} (HOST:PORT, "
                                    f"ray://HOST:10001, or auto for one started on this "
                                    f"machine with `ray start --head`), received: "
                                    f"{first}") from None
            self._started = True
        self._task = ray.remote(_call).options(num_cpus=self.num_cpus_per_job,
                                               num_gpus=self.num_gpus_per_job, max_retries=0)
        if self.jobs is not None:
            self._cap = self.jobs
        else:
            res = ray.cluster_resources()
            per = [res.get("CPU", 1) / self.num_cpus_per_job if self.num_cpus_per_job else
                   math.inf, res.get("GPU", 0) / self.num_gpus_per_job if self.num_gpus_per_job
                   else math.inf]
            self._cap = max(1, int(min(per)))

    def _close(self):
        if self._started:
            self._ray.shutdown()
            self._started = False

    def _capacity(self):
        return self._cap

    def _start(self, fn, job):
        return self._task.remote(fn, job)

    def _wait(self, running, timeout):
        ray = self._ray
        by_ref = {a.handle: a for a in running}
        ready, _ = ray.wait(list(by_ref), num_returns=1, timeout=timeout)
        if ready:  # and whatever else has ended by now
            ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=0)
        for ref in ready:
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # _call catches; only if Ray wraps
                result = ("raised", _one_line(exc))
            except ray.exceptions.RayError as exc:  # worker crashed, node died, object lost
                first = str(exc).strip().splitlines()
                result = ("lost", f"{type(exc).__name__}" + (f": {first[0]}" if first else ""))
            yield by_ref[ref], result

    def _kill(self, attempt):
        try:
            self._ray.cancel(attempt.handle, force=True)
        except Exception:  # already finished or gone: nothing to kill
            pass


def check_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a Ray address nothing answers at (Ray itself keeps retrying for minutes).

    ``auto`` and addresses without a port are left to Ray; ``HOST:PORT`` and
    ``ray://HOST:PORT`` get one TCP connection attempt.

    Raises
    ------
    ExecutorError
        Nothing accepts a connection at ``HOST:PORT`` within ``timeout_s`` seconds.
    """
    import socket

    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ExecutorError(f"expected a Ray cluster at {address}, received no answer "
                            f"({' '.join(str(exc).split()) or type(exc).__name__})") from None


def make_executor(*, ray: bool = False, ray_address: str | None = None, jobs: int | None = None,
                  timeout_s: float | None = None, max_retries: int = 2,
                  num_gpus_per_job: float = 0) -> Executor:
    """The executor a campaign's options ask for: :class:`RayExecutor` with ``ray`` or
    ``ray_address``, else :class:`LocalExecutor` with ``jobs`` (default 2) at a time.

    Raises
    ------
    ExecutorError
        Bad settings, or GPUs per job without Ray.
    pgtheory.extras.MissingExtraError
        Ray asked for and not installed (checked now, before any job runs).
    ExecutorError
        Nothing answers at ``ray_address`` (:func:`check_address`).
    """
    if ray or ray_address:
        from pgtheory.extras import require

        require("ray", "--ray")
        named = ray_address or os.environ.get("RAY_ADDRESS")  # Ray reads it when None
        if named:
            check_address(named)
        return RayExecutor(ray_address, jobs=jobs, timeout_s=timeout_s, max_retries=max_retries,
                           num_gpus_per_job=num_gpus_per_job)
    if num_gpus_per_job:
        raise ExecutorError(f"expected GPUs per job only with --ray, received "
                            f"{num_gpus_per_job} for the local executor")
    return LocalExecutor(2 if jobs is None else jobs, timeout_s=timeout_s,
                         max_retries=max_retries)
