"""The package as a user installs it: a wheel of this checkout in a throwaway venv, no network.

The wheel is built from a copy of the checkout's sources (so the build leaves nothing in the
checkout) and installed with ``--no-deps --no-index`` into a venv created in ``tmp_path``
without system site packages. Dependencies become visible through a ``.pth`` file in the
throwaway venv's site-packages that lists a directory (the lines of a ``.pth`` file are added to
``sys.path``; ``.pth`` files inside the listed directories are not processed, so this checkout's
editable install stays invisible). Two situations:

* core only -- a directory of symlinks to numpy and scipy (and, in a second directory, pytest
  with its own dependencies, to run a user's test session): ``import pgtheory`` and the exact
  theory work, nothing optional is imported, an optional part raises ``MissingExtraError``
  naming its extra, and the pytest plugin, which pytest loads in every session of an
  environment where pgtheory is installed, breaks nothing;
* full -- every dependency (the running venv's site-packages): a user's project with its own
  top-level ``oracles``, ``proofs`` and ``implementations`` packages keeps them, and
  ``pytest --pg-target`` runs the oracle suite.

Takes about a minute (the ``--pg-target`` suite run is most of it).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(sysconfig.get_path("purelib"))  # the running venv's site-packages
#: what the wheel is built from: the package-dir folders of pyproject.toml and what it reads
SOURCES = ("pyproject.toml", "README.md", "pgtheory", "oracles", "implementations", "proofs",
           "lab")
OPTIONAL = ("torch", "gymnasium", "sympy", "mujoco", "hypothesis", "stable_baselines3")
TIMEOUT = 300  # seconds, per subprocess (a hang fails the test instead of blocking CI)


def _run(cmd: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a clean environment (no PYTHONPATH, user site or inherited pytest options)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTEST_ADDOPTS",
                        "PYTEST_PLUGINS", "PYTHONSTARTUP")}
    env["PYTHONNOUSERSITE"] = "1"
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=TIMEOUT)
    if check and res.returncode != 0:
        raise AssertionError(f"{cmd} exited with {res.returncode}:\n{res.stdout[-3000:]}\n"
                             f"{res.stderr[-3000:]}")
    return res


def _top_level_entries(dist_names: list[str]) -> set[str]:
    """The site-packages entries (package folders, modules, ``*.libs``, dist-info) of the named
    distributions and, recursively, of their unconditional requirements."""
    seen: set[str] = set()
    entries: set[str] = set()
    todo = list(dist_names)
    while todo:
        name = todo.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        dist = importlib.metadata.distribution(name)
        for f in dist.files or ():
            top = Path(f).parts[0]
            if top not in ("..", "__pycache__") and not top.endswith(".pth"):
                entries.add(top)
        for spec in dist.requires or ():
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return entries


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel of the checkout's current sources (committed or not)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(path, src / name)
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--disable-pip-version-check", "-q", "-w", out, src], cwd=src)
    (whl,) = out.glob("pgtheory-*.whl")
    return whl


def _throwaway_venv(root: Path, wheel: Path, visible: list[Path]) -> tuple[Path, Path]:
    """A venv in ``root`` with the wheel installed and ``visible`` listed in a ``.pth`` file.

    Returns (its python, its site-packages).
    """
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "--disable-pip-version-check", "-q", wheel], cwd=root)
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                     cwd=root).stdout.strip())
    (site / "deps.pth").write_text("".join(f"{p}\n" for p in visible))
    return python, site


def _probe(python: Path, cwd: Path, code: str) -> dict:
    """Run ``code`` (which fills the dict ``out``) in ``python`` and return ``out``."""
    script = f"import json, sys\nout = {{}}\n{textwrap.dedent(code)}\nprint(json.dumps(out))\n"
    res = _run([python, "-c", script], cwd=cwd)
    return json.loads(res.stdout.strip().splitlines()[-1])


# What a user's probe checks, in that user's venv (the results come back as JSON).
IMPORT_PROBE = f"""
optional = {OPTIONAL!r}
import pgtheory as pg
out["file"] = pg.__file__
out["after_import"] = sorted(m for m in optional if m in sys.modules)
import pgtheory.oracles.pytest_plugin
out["after_plugin"] = sorted(m for m in (*optional, "numpy", "scipy") if m in sys.modules)
import numpy as np
# a state that loops on itself with reward 1 is worth sum_t gamma^t = 1 / (1 - gamma) = 10;
# one with reward 0 is worth 0; mu = (1/2, 1/2) gives J = 5 (geometric series)
P = np.zeros((2, 2, 2))
P[0, :, 0] = P[1, :, 1] = 1.0
mdp = pg.TabularMDP(P=P, R=np.array([[1.0, 1.0], [0.0, 0.0]]), gamma=0.9, mu=np.full(2, 0.5))
pi = np.full((2, 2), 0.5)
out["values"] = pg.state_values(mdp, pi).tolist()
out["return"] = float(pg.expected_return(mdp, pi))
out["after_theory"] = sorted(m for m in optional if m in sys.modules)
"""


def test_wheel_contents(wheel: Path):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    # everything installs under pgtheory/ (so a user's own oracles/ etc. are never shadowed)
    assert tops == {"pgtheory"}, tops
    for sub in ("oracles", "implementations", "proofs", "lab"):
        assert f"pgtheory/{sub}/__init__.py" in names
    meta = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines()
                if line.startswith("Requires-Dist:")]
    core = sorted(r.name for r in requires if r.marker is None)
    assert core == ["numpy", "scipy"], core
    extras = {extra for r in requires if r.marker is not None
              for extra in re.findall(r'extra == "([\w-]+)"', str(r.marker))}
    assert extras == {"oracles", "sb3", "mujoco", "proofs", "train", "ray", "all", "docs",
                      "test"}, extras
    torch = next(r for r in requires if r.name == "torch")
    assert all(s.operator == ">=" for s in torch.specifier), torch  # a lower bound, never a pin
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "pgtheory = pgtheory.oracles.pytest_plugin" in entry_points


def test_core_only_install(wheel: Path, tmp_path: Path):
    core = tmp_path / "core-deps"
    tools = tmp_path / "pytest-deps"
    for folder, dists in ((core, ["numpy", "scipy"]), (tools, ["pytest"])):
        folder.mkdir()
        for entry in _top_level_entries(dists):
            if (SITE / entry).exists():
                (folder / entry).symlink_to(SITE / entry)
    assert not [p for p in core.iterdir() if not p.name.startswith(("numpy", "scipy"))]
    python, site = _throwaway_venv(tmp_path, wheel, [core, tools])
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)

    out = _probe(python, project, IMPORT_PROBE)
    assert Path(out["file"]).resolve().is_relative_to(site.resolve()), out["file"]
    assert out["after_import"] == [] and out["after_plugin"] == [], out
    assert out["values"] == pytest.approx([10.0, 0.0]) and out["return"] == pytest.approx(5.0)
    assert out["after_theory"] == [], out

    # each optional part names its extra in one line; the lazy packages themselves import
    extras = _probe(python, project, """
    from pgtheory.extras import MissingExtraError
    import pgtheory.oracles, pgtheory.implementations, pgtheory.proofs
    for stmt in ("import pgtheory.oracles.suite", "pgtheory.implementations.ALGORITHMS",
                 "pgtheory.proofs.THEOREMS", "import pgtheory.implementations.mujoco_lqr"):
        try:
            exec(stmt)
            out[stmt] = "no error"
        except MissingExtraError as exc:
            out[stmt] = str(exc)
    """)
    assert "pip install 'pgtheory[oracles]'" in extras["import pgtheory.oracles.suite"], extras
    assert "pgtheory[oracles]" in extras["pgtheory.implementations.ALGORITHMS"], extras
    assert "pgtheory[proofs]" in extras["pgtheory.proofs.THEOREMS"], extras
    assert "pgtheory[mujoco]" in extras["import pgtheory.implementations.mujoco_lqr"], extras
    assert all("\n" not in msg for msg in extras.values()), extras

    # a user's pytest session: the plugin is loaded (its option exists) and breaks nothing
    (project / "tests" / "test_user.py").write_text(
        "import pgtheory\n\ndef test_user():\n    assert pgtheory.gae is not None\n")
    res = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
               check=False)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr
    res = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pg-target", "x:y"],
               cwd=project, check=False)
    assert res.returncode == pytest.ExitCode.USAGE_ERROR, res.stdout + res.stderr
    assert "pip install 'pgtheory[oracles]'" in res.stderr, res.stderr
    assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr


USER_PACKAGES = ("oracles", "proofs", "implementations")

USER_TEST = '''
import implementations
import oracles
import proofs

import pgtheory.oracles.suite


def test_own_packages_and_pgtheory_are_both_the_right_ones():
    assert (oracles.MARKER, proofs.MARKER, implementations.MARKER) == (
        "user oracles", "user proofs", "user implementations")
    assert pgtheory.oracles.suite.__file__.startswith({site!r})
    assert callable(pgtheory.oracles.suite.run_suite)
'''


def test_full_install_in_a_project_with_its_own_oracles_package(wheel: Path, tmp_path: Path):
    python, site = _throwaway_venv(tmp_path, wheel, [SITE])
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    for name in USER_PACKAGES:
        (project / name).mkdir()
        (project / name / "__init__.py").write_text(f'MARKER = "user {name}"\n')

    out = _probe(python, project, IMPORT_PROBE)
    # the wheel's copy, not this checkout's editable install (its .pth is not processed)
    assert Path(out["file"]).resolve().is_relative_to(site.resolve()), out["file"]
    assert out["after_import"] == [], f"import pgtheory imported {out['after_import']}"
    assert out["after_plugin"] == [], f"the pytest plugin imported {out['after_plugin']}"
    assert out["after_theory"] == [], f"the exact theory imported {out['after_theory']}"

    (project / "tests" / "test_mine.py").write_text(USER_TEST.format(site=str(site)))
    res = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project,
               check=False)
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr

    res = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pg-target",
                "pgtheory.oracles.example_target:a2c", "--pg-quick"], cwd=project, check=False)
    assert res.returncode == 0 and "passed" in res.stdout, res.stdout[-3000:] + res.stderr
