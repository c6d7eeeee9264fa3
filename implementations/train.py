"""``pgtheory train``: run one implementation on a gymnasium environment, with logs and resume.

:func:`train` writes into its output directory

* ``run.json``: algorithm, environment, seed, sizes, the full configuration, versions;
* ``progress.csv``: one row per iteration (env steps, wall time, steps per second, recent
  training-episode return and length, the update's statistics, and for a Gaussian head
  ``log_std_sum``, its log standard deviations summed over the action dimensions);
* ``tb/``: the same scalars as TensorBoard events (``tensorboard --logdir DIR/tb``);
* ``checkpoint.pt``: written atomically after *every* iteration (networks, optimizers,
  normalization statistics, RNG states, counters), so a killed run loses at most the
  iteration in progress; :func:`train` with ``resume=DIR`` continues from it;
* ``evaluation.json``: the final deterministic evaluation (policy mode, observation
  statistics frozen, unscaled rewards);
* ``learning_curve.png``: training return against env steps, with the evaluation.

Resuming restores everything the learner owns; the environments' episodes in progress are
restarted (simulator states are not saved), so a resumed run is a valid continuation but not
bit-identical to an uninterrupted one. Without a kill, the same seed on CPU gives the same
results (torch's CPU kernels are deterministic for these networks).
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import importlib.util
import json
import os
import pickle
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from pgtheory.errors import InvalidArgumentError
from pgtheory.extras import require

# torch, gymnasium and the algorithms are imported inside the functions that train, so that
# the command line validates its arguments (parse_settings, read_run, steps_done, holds_run)
# before any heavy import.

__all__ = ["TrainResult", "default_out", "evaluate", "holds_run", "parse_overrides",
           "parse_settings", "plot_learning_curve", "read_run", "setting_types", "steps_done",
           "train"]

CSV_NAME, CHECKPOINT_NAME, RUN_NAME = "progress.csv", "checkpoint.pt", "run.json"
#: what a run writes into its directory (removed first when a run is overwritten)
RUN_FILES = (RUN_NAME, CSV_NAME, CHECKPOINT_NAME, "model.pt", "evaluation.json",
             "learning_curve.png")
#: the run.json keys a resumed run reads
_RUN_KEYS = ("algorithm", "env_id", "seed", "num_envs", "total_steps", "overrides", "config")
#: algorithm -> its configuration class, defined in ``pgtheory.implementations.<algorithm>``
#: (the keys of ``pgtheory.implementations.ALGORITHMS``; the tests hold the two together)
_CONFIG_CLASSES = {"reinforce": "REINFORCEConfig", "a2c": "A2CConfig", "trpo": "TRPOConfig",
                   "ppo": "PPOConfig"}
#: accepted spellings of a boolean setting
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclasses.dataclass
class TrainResult:
    """What a run produced: ``out`` directory, env steps, iterations, the mean return of the
    last (up to) 100 training episodes, and the final evaluation (mean, std, episodes)."""

    out: Path
    env_steps: int
    iterations: int
    train_return: float
    eval_return: float
    eval_std: float
    eval_episodes: int
    seconds: float


def setting_types(algorithm: str) -> dict[str, str]:
    """The configuration settings of ``algorithm``: name -> type annotation text, in order.

    Read from the source of the configuration dataclasses (their class bodies and bases), so
    that no torch import is needed; equal to ``{f.name: f.type for f in
    dataclasses.fields(config_class)}`` (the tests hold the two to each other).

    Raises
    ------
    InvalidArgumentError
        ``algorithm`` is not one of reinforce, a2c, trpo, ppo.
    """
    if algorithm not in _CONFIG_CLASSES:
        raise InvalidArgumentError(f"algorithm: expected one of {sorted(_CONFIG_CLASSES)}, "
                                   f"received {algorithm!r}")
    return _class_fields(f"pgtheory.implementations.{algorithm}", _CONFIG_CLASSES[algorithm])


def _class_fields(module: str, name: str) -> dict[str, str]:
    """Annotated class-level names of class ``name`` in ``module`` and its bases (bases first);
    the bases are looked up in the module or followed through its ``from X import Base``."""
    tree = ast.parse(Path(importlib.util.find_spec(module).origin).read_text())
    imported = {a.asname or a.name: node.module for node in tree.body
                if isinstance(node, ast.ImportFrom) and node.module for a in node.names}
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
    fields: dict[str, str] = {}
    for base in cls.bases:
        if isinstance(base, ast.Name) and base.id != "object":
            fields.update(_class_fields(imported.get(base.id, module), base.id))
    for node in cls.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            annotation = ast.unparse(node.annotation)
            if "ClassVar" not in annotation:
                fields[node.target.id] = annotation
    return fields


def parse_settings(algorithm: str, items: list[str] | None) -> dict:
    """``["key=value", ...]`` -> typed settings of ``algorithm``'s configuration, without torch.

    Values are typed by the setting's annotation: numbers, integers, booleans (true/false,
    1/0, yes/no), lists of integers (``[64,64]``), ``none`` where the setting is optional,
    strings. Ranges (``gamma`` in [0, 1), ...) are checked when the configuration is built.

    Raises
    ------
    InvalidArgumentError
        Unknown algorithm, malformed item, unknown setting or a value of the wrong type; the
        message names the setting, what was expected and what was received.
    """
    return _parse(items, setting_types(algorithm), f"{algorithm}", InvalidArgumentError)


def parse_overrides(items: list[str] | None, config_class) -> dict:
    """``["key=value", ...]`` -> typed settings of ``config_class`` (see :func:`parse_settings`).

    Raises
    ------
    ConfigError
        Malformed item, unknown key or a value of the wrong type.
    """
    from pgtheory.implementations.common import ConfigError

    types = {f.name: str(f.type) for f in dataclasses.fields(config_class)}
    return _parse(items, types, config_class.__name__, ConfigError)


def _parse(items: list[str] | None, types: dict[str, str], owner: str, error) -> dict:
    out = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise error(f"--set: expected KEY=VALUE, received {item!r}")
        if key not in types:
            raise error(f"--set: expected a setting of {owner} (one of {sorted(types)}), "
                        f"received unknown setting {key!r}")
        out[key] = _typed(key, raw, types[key], error)
    return out


def _typed(key: str, raw: str, annotation: str, error):
    """``raw`` as the configuration field's type (annotation text), or ``error``."""
    def bad(expected: str):
        return error(f"--set {key}: expected {expected}, received {raw!r}")

    if annotation == "bool":
        if raw.strip().lower() not in _BOOLS:
            raise bad("true or false (also 1/0, yes/no)")
        return _BOOLS[raw.strip().lower()]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {"none": None, "true": True, "false": False}.get(raw.lower(), raw)
    if value is None:
        if "None" in annotation:
            return None
        raise bad(f"a value of type {annotation}")
    if annotation == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if annotation.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise bad("a number" + (" or none" if "None" in annotation else ""))
        return float(value)
    if annotation == "tuple":
        if not isinstance(value, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad("a list of integers such as [64,64] or []")
        return tuple(value)
    if annotation == "str" and not isinstance(value, str):
        raise bad("a string")
    return value


def default_out(algorithm: str, env_id: str, seed: int) -> Path:
    """The output directory of a run when none is given: ``runs/ALGO-ENV-sSEED``."""
    return Path(f"runs/{algorithm}-{env_id.replace('/', '_')}-s{seed}")


def holds_run(out: str | os.PathLike) -> bool:
    """Whether ``out`` holds a run that trained (a checkpoint): starting a new run there would
    overwrite it."""
    return (Path(out) / CHECKPOINT_NAME).exists()


def read_run(out: str | os.PathLike, *, argument: str = "resume") -> dict:
    """A run directory's ``run.json`` (algorithm, environment, seed, sizes, configuration).

    Raises
    ------
    InvalidArgumentError
        No ``run.json``, or not a readable run record; the message names ``argument``.
    """
    p = Path(out) / RUN_NAME
    if not p.is_file():
        raise InvalidArgumentError(f"{argument}: expected a run directory with {RUN_NAME}, "
                                   f"received {str(out)!r} (no {p})")
    try:
        run = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgumentError(f"{argument}: expected a readable {p}, received an "
                                   f"unreadable file ({exc})") from exc
    missing = [k for k in _RUN_KEYS if not isinstance(run, dict) or k not in run]
    if missing:
        raise InvalidArgumentError(f"{argument}: expected {p} to record {list(_RUN_KEYS)}, "
                                   f"received a record without {missing}")
    return run


def steps_done(out: str | os.PathLike) -> int:
    """Env steps (summed over envs) a run directory's last completed iteration reached: from
    ``run.json`` (``env_steps``), or the last row of ``progress.csv`` for runs recorded before
    ``run.json`` kept the count; 0 when neither has it."""
    run = read_run(out)
    if isinstance(run.get("env_steps"), int):
        return run["env_steps"]
    rows = _read_csv(Path(out) / CSV_NAME)
    try:
        return int(rows[-1]["env_steps"]) if rows else 0
    except (KeyError, ValueError):
        return 0


def train(algorithm: str | None, env_id: str | None, *, total_steps: int | None = None,
          seed: int = 0, num_envs: int = 1, device: str = "cpu",
          out: str | os.PathLike | None = None, overrides: dict | None = None,
          resume: str | os.PathLike | None = None, overwrite: bool = False,
          eval_episodes: int = 10, progress: bool = True, tensorboard: bool = True,
          threads: int | None = 1, monitor=None) -> TrainResult:
    """Train ``algorithm`` on ``env_id`` for ``total_steps`` env steps (see the module docstring).

    Parameters
    ----------
    algorithm : {"reinforce", "a2c", "trpo", "ppo"}, or None with ``resume``
    env_id : str, or None with ``resume``
        Any registered gymnasium id (MuJoCo v5 tasks, classic control, ``pgtheory/...``).
    total_steps : int, optional
        Env steps summed over the environments (whole iterations: rounded up to a multiple of
        ``num_steps * num_envs``). Default: 1,000,000 for a new run; with ``resume``, the
        run's recorded total (finish a killed run). With ``resume``, a larger value extends
        the run to that many steps (``run.json`` records the new total; a learning-rate
        schedule follows the new total from the resumed iteration on); a value below the
        steps already done is an error.
    seed, num_envs : int
    device : {"auto", "cpu", "cuda"}
        Where networks and updates run; environments always step on the CPU.
    out : path, optional
        Output directory (default ``runs/ALGO-ENV-sSEED``); created.
    overrides : dict, optional
        Configuration settings (see the algorithm's config dataclass).
    resume : path, optional
        A previous run's directory: its ``run.json`` fixes every other argument except
        ``total_steps``.
    overwrite : bool
        Allow a new run in an ``out`` that holds a trained run (its files are removed first);
        without it, such an ``out`` is an error.
    eval_episodes : int
        Episodes of the final deterministic evaluation (0: skip).
    progress, tensorboard : bool
    threads : int or None
        torch CPU threads (default 1: for 64x64 networks one thread is faster than several,
        and parallel runs do not contend; None leaves torch's default).
    monitor : callable, optional
        ``monitor(agent, iteration)`` after every update (the oracle monitors of
        ``pgtheory scale``); the agent records its optimizer steps when given.

    Returns
    -------
    TrainResult

    Raises
    ------
    pgtheory.extras.MissingExtraError
        torch or gymnasium is not installed.
    ConfigError
        Unknown algorithm, environment or setting; ``out`` holds a trained run and not
        ``overwrite``; a resume directory without a readable checkpoint, or ``total_steps``
        below the steps it has done.
    pgtheory.errors.InvalidArgumentError
        A resume directory without a readable ``run.json``.
    TrainingDivergedError
        NaN or inf in the losses (the run stops; the last good checkpoint is kept).
    """
    require("oracles", "training")  # torch and gymnasium; one line naming the extra
    import torch
    from pgtheory.implementations import ALGORITHMS
    from pgtheory.implementations.common import (
        ConfigError,
        TrainingDivergedError,
        make_env_fn,
    )

    t_start = time.time()
    if threads is not None:
        torch.set_num_threads(int(threads))
    run = None
    if resume is not None:
        out = Path(resume)
        run = read_run(out)
        algorithm, env_id, seed = run["algorithm"], run["env_id"], run["seed"]
        num_envs, overrides = run["num_envs"], run["overrides"]
        total_steps = run["total_steps"] if total_steps is None else total_steps
    elif total_steps is None:
        total_steps = 1_000_000
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"algorithm: expected one of {sorted(ALGORITHMS)}, received "
                          f"{algorithm!r}")
    if int(total_steps) < 1 or int(num_envs) < 1:
        raise ConfigError(f"total_steps and num_envs: expected positive integers, received "
                          f"{total_steps!r}, {num_envs!r}")
    agent_class, config_class = ALGORITHMS[algorithm]
    overrides = dict(overrides or {})
    if "hidden_sizes" in overrides:
        overrides["hidden_sizes"] = tuple(overrides["hidden_sizes"])
    config = config_class().replace(**overrides)
    env_fn = make_env_fn(env_id, config)
    out = Path(out or default_out(algorithm, env_id, seed))
    if resume is None and holds_run(out):
        if not overwrite:
            raise ConfigError(f"out: expected a directory without a trained run, received "
                              f"{str(out)!r}, which holds one ({CHECKPOINT_NAME}); resume it "
                              f"(resume={str(out)!r}) or pass overwrite=True")
        _clear_run(out)
    out.mkdir(parents=True, exist_ok=True)
    agent = agent_class(env_fn, config, seed=seed, num_envs=num_envs, device=device,
                        record=monitor is not None)
    per_iteration = agent.T * agent.N
    n_iterations = -(-int(total_steps) // per_iteration)
    ckpt = out / CHECKPOINT_NAME
    if run is not None:
        if not ckpt.exists():
            raise ConfigError(f"resume: {ckpt} does not exist (nothing to resume)")
        try:
            agent.load_state_dict(torch.load(ckpt, map_location=agent.device,
                                             weights_only=False))
        except (OSError, EOFError, pickle.UnpicklingError, RuntimeError, KeyError, TypeError,
                ValueError) as exc:
            raise ConfigError(f"resume: expected a checkpoint of this run in {ckpt}, received "
                              f"an unreadable one ({type(exc).__name__}: {exc})") from exc
        if int(total_steps) < agent.env_steps:
            raise ConfigError(f"total_steps: expected at least the {agent.env_steps} env steps "
                              f"the run in {str(out)!r} has done, received {total_steps}")
        if int(total_steps) != run["total_steps"]:
            _update_run(out, total_steps=int(total_steps))
        agent.obs, _ = agent.envs.reset(seed=seed + 7919 * agent.iterations)
        elapsed_before = run.get("seconds", 0.0)
    else:
        elapsed_before = 0.0
        _write_json(out / RUN_NAME, {
            "algorithm": algorithm, "env_id": env_id, "seed": seed, "num_envs": num_envs,
            "total_steps": int(total_steps), "device": str(agent.device),
            "overrides": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in overrides.items()},
            "config": _jsonable(dataclasses.asdict(config)), "versions": _versions()})
    log = _Log(out, agent.iterations, agent.env_steps, tensorboard)
    bar = _progress_bar(progress, n_iterations * per_iteration, agent.env_steps,
                        f"{algorithm} {env_id}")
    t_run = time.time()
    steps_at_start = agent.env_steps
    try:
        while agent.iterations < n_iterations:
            agent.set_progress(1.0 - agent.iterations / n_iterations)
            t0 = time.time()
            iteration = agent.iterate()
            stats = dict(agent.stats)
            stats["nonfinite_steps"] = agent.nonfinite_steps
            log_std = getattr(agent.actor, "log_std", None)  # a Gaussian head's, after the update
            if isinstance(log_std, torch.Tensor):
                stats["log_std_sum"] = round(float(log_std.detach().sum()), 4)
            if any(not np.isfinite(v) for k, v in stats.items() if k.endswith("loss")):
                raise TrainingDivergedError(
                    f"iteration {agent.iterations}: non-finite loss {stats}; stopped, the "
                    f"checkpoint of the previous iteration is kept in {out}")
            if monitor is not None:
                monitor(agent, iteration)
            _save_checkpoint(agent, ckpt)
            seconds = elapsed_before + time.time() - t_run
            row = {"iteration": agent.iterations, "env_steps": agent.env_steps,
                   "time_s": round(seconds, 3),
                   "sps": round(per_iteration / max(time.time() - t0, 1e-9), 1),
                   "episodes": agent.episodes, "return_mean": _mean(agent.episode_returns),
                   "length_mean": _mean(agent.episode_lengths), **stats}
            log.write(row)
            _update_run(out, seconds=seconds, env_steps=agent.env_steps)
            if bar is not None:
                bar.update(per_iteration)
                sps = (agent.env_steps - steps_at_start) / max(time.time() - t_run, 1e-9)
                bar.set_postfix(sps=f"{sps:.0f}", ret=f"{row['return_mean']:.1f}")
    finally:
        if bar is not None:
            bar.close()
        log.close()
    torch.save({"actor": agent.actor.state_dict(),
                "critic": None if agent.critic is None else agent.critic.state_dict(),
                "config": dataclasses.asdict(config)}, out / "model.pt")
    ev = evaluate(agent, env_id, config, episodes=eval_episodes, seed=seed + 100_000)
    _write_json(out / "evaluation.json", ev)
    plot_learning_curve(out)
    agent.envs.close()
    return TrainResult(out, agent.env_steps, agent.iterations, _mean(agent.episode_returns),
                       ev["mean"], ev["std"], ev["episodes"], time.time() - t_start)


def evaluate(agent, env_id: str, config, *, episodes: int = 10, seed: int = 0) -> dict:
    """Deterministic evaluation: the policy's mode, the training observation statistics frozen,
    rewards unscaled. Returns ``{"mean", "std", "episodes", "returns"}`` (NaN mean for 0
    episodes)."""
    import gymnasium as gym
    from pgtheory.implementations.common import find_wrapper, make_env_fn

    if episodes <= 0:
        return {"mean": float("nan"), "std": float("nan"), "episodes": 0, "returns": []}
    env = make_env_fn(env_id, dataclasses.replace(config, scale_rewards=False))()
    stats = agent.observation_statistics()
    norm = find_wrapper(env, gym.wrappers.NormalizeObservation)
    if norm is not None and stats is not None:
        norm.obs_rms.mean = np.array(stats.obs_rms.mean, copy=True)
        norm.obs_rms.var = np.array(stats.obs_rms.var, copy=True)
        norm.obs_rms.count = stats.obs_rms.count
        norm.update_running_mean = False
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action = agent.act(obs[None], deterministic=True)[0]
            obs, reward, term, trunc, _ = env.step(action)
            total += float(reward)
            done = term or trunc
        returns.append(total)
    env.close()
    return {"mean": float(np.mean(returns)), "std": float(np.std(returns)),
            "episodes": episodes, "returns": returns}


def plot_learning_curve(out: str | os.PathLike, title: str | None = None) -> Path | None:
    """``learning_curve.png`` from ``progress.csv`` (and ``evaluation.json`` if present).
    Returns the path, or None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    rows = _read_csv(out / CSV_NAME)
    pts = [(float(r["env_steps"]), float(r["return_mean"])) for r in rows
           if r.get("return_mean") not in (None, "", "nan")]
    if not pts:
        return None
    run = _read_run(out)
    x, y = zip(*pts, strict=True)
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    ax.plot(x, y, lw=1.5, label="training return (mean of last 100 episodes)")
    ev_path = out / "evaluation.json"
    if ev_path.exists():
        ev = json.loads(ev_path.read_text())
        if ev["episodes"]:
            ax.errorbar([x[-1]], [ev["mean"]], yerr=[ev["std"]], fmt="o", color="C3",
                        label=f"final deterministic evaluation ({ev['episodes']} episodes)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("episode return")
    ax.set_title(title or f"{run.get('algorithm', '').upper()} on {run.get('env_id', '')} "
                          f"(seed {run.get('seed', '')})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = out / "learning_curve.png"
    fig.savefig(path)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------- helpers
class _Log:
    """progress.csv (rows after ``iteration`` dropped on resume) and TensorBoard."""

    def __init__(self, out: Path, iteration: int, env_steps: int, tensorboard: bool) -> None:
        self.path = out / CSV_NAME
        kept = [r for r in _read_csv(self.path) if int(r["iteration"]) <= iteration]
        self.fields = list(kept[0]) if kept else None
        self.rows = kept
        if kept:  # rewrite without the rows of iterations the checkpoint does not hold
            with self.path.open("w", newline="") as f:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(kept)
        elif self.path.exists():
            self.path.unlink()
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"), purge_step=env_steps + 1 if
                                        iteration else None)

    def write(self, row: dict) -> None:
        new = self.fields is None
        if new:
            self.fields = list(row)
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, self.fields, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("iteration", "env_steps") and isinstance(v, (int, float)):
                    self.writer.add_scalar(k, v, row["env_steps"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _progress_bar(enabled: bool, total: int, initial: int, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True)


def _save_checkpoint(agent, path: Path) -> None:
    import torch

    tmp = path.with_suffix(".tmp")
    torch.save(agent.state_dict(), tmp)
    os.replace(tmp, path)


def _mean(xs) -> float:
    return float(np.mean(xs)) if len(xs) else float("nan")


def _read_csv(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _read_run(out: Path) -> dict:
    p = Path(out) / RUN_NAME
    return json.loads(p.read_text()) if p.exists() else {}


def _clear_run(out: Path) -> None:
    """Remove a previous run's files from ``out`` (and only those)."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    if (out / "tb").is_dir():
        shutil.rmtree(out / "tb")


def _update_run(out: Path, **fields) -> None:
    run = _read_run(out)
    run.update(fields)
    _write_json(out / RUN_NAME, run)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_jsonable(obj), indent=2))
    os.replace(tmp, path)


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _versions() -> dict:
    import gymnasium
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "gymnasium": gymnasium.__version__, "numpy": np.__version__}
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    return out
