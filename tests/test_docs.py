"""The documentation cannot go stale: the site builds strictly, and what the pages show still runs.

What is checked, and how:

* ``mkdocs build --strict`` of ``mkdocs.yml`` into a temporary folder exits 0: no broken link
  between pages, no missing page in the nav, no warning from mkdocstrings. Skipped only when
  mkdocs is not importable (the ``docs`` extra installs it; CI has it).
* Every shell example in ``README.md`` and ``docs/**/*.md`` written as a ``console`` block
  (lines starting ``$ `` are commands, a trailing ``\\`` continues one; the lines after a
  command are its output; ``$ echo $?`` followed by a number states the exit status of the
  command before it, 0 otherwise). Commands are handled by :func:`how_checked`:

  - **run fully**, as a subprocess through the shell with this interpreter's ``bin`` first on
    PATH, in an empty folder (in the repository root when the command names its ``examples/``
    or ``tools/``): ``pgtheory audit ... --quick`` (5 to 15 s each), ``pgtheory check``,
    ``pgtheory prove`` with theorem names, ``pgtheory train`` for at most 10,000 env steps,
    ``pytest --pg-target ... --pg-quick``, ``python tools/...``. The exit status must match,
    and every shown output line must still appear in stdout, in order. Lines are compared with
    numbers replaced by ``#`` (timings, p-values, estimates; the counts of a summary such as
    "12 passed" are kept), runs of spaces, of ``=`` and of ``-`` shortened (pytest's bars,
    table rules) and pytest's ``(0:01:08)`` after a long duration dropped. ``...`` inside a
    line stands for any text, and a line of its own for any lines. Identical commands on
    different pages run once.
  - **arguments only**, because running them takes from half a minute to hours: full audits,
    ``pgtheory audit --power``, ``pgtheory prove`` without names (about 40 s), longer
    ``pgtheory train`` runs and ``pgtheory scale`` (MuJoCo). The command line is parsed by the
    real ``pgtheory`` parser with the subcommand's work replaced; the audit target must
    resolve, the environment id must be registered and every ``train --set KEY=VALUE`` must be
    a valid setting. ``pytest --pg-target`` without ``--pg-quick`` is collected
    (``--collect-only``), which loads the target.
  - ``make TARGET`` runs as ``make -n TARGET`` (a dry run: the real targets create a virtual
    environment and run the whole test suite).
  - ``pip install`` is not run (it downloads packages); every extra it names must exist in
    ``pyproject.toml``.
  - Anything else fails the test until a rule is added here.

* Every ``pycon`` block (``>>>`` sessions) is run as a doctest, with ELLIPSIS and
  NORMALIZE_WHITESPACE; the blocks of one page run in order in one namespace.
"""

from __future__ import annotations

import dataclasses
import doctest
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
BIN = Path(sys.executable).parent  # the virtual environment running this test
TIMEOUT_S = 300
MAX_TRAIN_STEPS = 10_000


@dataclasses.dataclass
class Example:
    """One ``$ command`` of a console block, with the output and exit status the page shows."""

    page: str
    line: int
    command: str
    output: list[str]
    status: int = 0

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(text: str, language: str) -> list[tuple[int, list[str]]]:
    """(line number of the first content line, content lines) of each fenced block."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == f"```{language}":
            start, body = i + 2, []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            out.append((start, body))
        i += 1
    return out


def console_examples(path: Path) -> list[Example]:
    examples: list[Example] = []
    page = str(path.relative_to(REPO))
    for start, body in _blocks(path.read_text(encoding="utf-8"), "console"):
        current: Example | None = None
        expect_status = False
        j = 0
        while j < len(body):
            line, lineno = body[j], start + j
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\") and j + 1 < len(body):
                    j += 1
                    command = command[:-1].rstrip() + " " + body[j].strip()
                if command.strip() == "echo $?":
                    if current is None:
                        raise ValueError(f"{page}:{lineno}: 'echo $?' without a command before it")
                    expect_status = True
                else:
                    current = Example(page, lineno, command.strip(), [])
                    examples.append(current)
                    expect_status = False
            elif expect_status:
                current.status = int(line.strip())
                expect_status = False
            elif current is not None:
                current.output.append(line)
            j += 1
    return examples


def pycon_blocks(path: Path) -> list[tuple[int, str]]:
    return [(start, "\n".join(body) + "\n")
            for start, body in _blocks(path.read_text(encoding="utf-8"), "pycon")]


EXAMPLES = [e for p in PAGES for e in console_examples(p)]
# page -> its >>> blocks, run in order in one namespace (a page's session continues)
SESSIONS = {str(p.relative_to(REPO)): pycon_blocks(p) for p in PAGES if pycon_blocks(p)}


# ------------------------------------------------------------------------------ classification
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def split_command(command: str) -> tuple[list[str], list[str]]:
    """(leading VAR=value assignments, the command's argv)."""
    argv = shlex.split(command)
    k = 0
    while k < len(argv) and _ASSIGNMENT.match(argv[k]):
        k += 1
    return argv[:k], argv[k:]


def runs_in_repo(command: str) -> bool:
    """Commands naming the repository's examples/ or tools/ run from its root."""
    assignments, argv = split_command(command)
    words = [a.split("=", 1)[1] for a in assignments] + argv
    return any(w.startswith(("examples", "tools/")) for w in words)


def how_checked(command: str) -> tuple[str, str]:
    """(mode, reason): "run", "arguments", "collect", "dry-run" or "extras"."""
    _, argv = split_command(command)
    prog, args = argv[0], argv[1:]
    sub = args[0] if args else ""
    if prog == "pip":
        return "extras", "installs packages from the network"
    if prog == "make":
        return "dry-run", "the targets create .venv and run the whole suite (minutes)"
    if prog == "python" and sub.startswith("tools/"):
        return "run", ""
    if prog == "pytest" and "--pg-target" in args:
        if "--pg-quick" in args:
            return "run", ""
        return "collect", "a full suite run takes minutes"
    if prog == "pgtheory":
        if sub == "audit":
            if "--power" in args:
                return "arguments", "the power run audits hundreds of targets (hours)"
            if "--quick" in args:
                return "run", ""
            return "arguments", "a full audit trains models (30 s to a minute each)"
        if sub == "check":
            return "run", ""
        if sub == "prove":
            names = [a for a in args[1:] if not a.startswith("-")]
            return ("run", "") if names else ("arguments", "all theorems take about 40 s")
        if sub == "train":
            steps = int(args[args.index("--total-steps") + 1]) if "--total-steps" in args \
                else 1_000_000
            if steps <= MAX_TRAIN_STEPS:
                return "run", ""
            return "arguments", f"{steps} env steps of training"
        if sub == "scale":
            return "arguments", "MuJoCo training runs (30 min and more)"
    raise AssertionError(f"no rule for the documented command {command!r}: add one to "
                         f"how_checked in tests/test_docs.py")


# ------------------------------------------------------------------------------ output matching
_COUNT_WORDS = "passed|failed|skipped|inconclusive|errors?|proved|checked"
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+(?!\d)(?! (?:" + _COUNT_WORDS
                     + r")\b))(?:[eE][-+]?\d+)?")


_RULE = re.compile(r"([=-])\1{2,}")  # pytest's ===== bars and table rules, any length


def normalized(text: str) -> str:
    text = _RULE.sub(r"\1\1\1", _NUMBER.sub("#", text)).replace("(#:#:#)", "")
    return " ".join(text.split())


def missing_lines(shown: list[str], actual: str) -> list[str]:
    """The shown lines that do not appear, in order, among the actual output lines."""
    lines = [normalized(x) for x in actual.splitlines()]
    missing, pos = [], 0
    for want in shown:
        if not want.strip() or want.strip() == "...":
            continue
        parts = [normalized(p) for p in want.split("...")]
        for k in range(pos, len(lines)):
            at, ok = 0, True
            for part in parts:
                found = lines[k].find(part, at) if part else at
                if found < 0:
                    ok = False
                    break
                at = found + len(part)
            if ok:
                pos = k + 1
                break
        else:
            missing.append(want)
    return missing


def test_matcher_catches_a_changed_line():
    """The matcher itself can fail: a changed verdict, a changed count, a missing line."""
    actual = ("given_the_batch.advantages            FAIL         -0.183554    1e-04\n"
              "10 passed, 3 failed in 7.1 s.\n")
    assert missing_lines(["given_the_batch.advantages FAIL -0.2 1e-03", "...",
                          "10 passed, 3 failed in 9.9 s."], actual) == []
    assert missing_lines(["given_the_batch.advantages PASS -0.183554 1e-04"], actual)
    assert missing_lines(["10 passed, 4 failed in 7.1 s."], actual)
    assert missing_lines(["10 passed, 3 failed in 7.1 s.", "given_the_batch.advantages"],
                         actual)  # order matters


# ------------------------------------------------------------------------------ running
def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(COLUMNS="80", NO_COLOR="1", PYTHONHASHSEED="0")
    # one torch/OpenMP thread, as pgtheory audit uses: on a busy 2-core machine the default
    # two threads made `pytest --pg-target ... --pg-quick` take 93 s instead of 9 s
    env["OMP_NUM_THREADS"] = "1"
    env.pop("PYTEST_ADDOPTS", None)
    return env


_RUNS: dict[str, subprocess.CompletedProcess] = {}


def run_once(command: str, cwd: Path) -> subprocess.CompletedProcess:
    if command not in _RUNS:
        _RUNS[command] = subprocess.run(command, shell=True, cwd=cwd, env=_env(),
                                        capture_output=True, text=True, timeout=TIMEOUT_S)
    return _RUNS[command]


def check_arguments(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parse a pgtheory command line with the real parser; validate what is cheap to validate."""
    from pgtheory import cli

    seen = []

    def instead(args):
        seen.append(args)
        if args.command == "audit" and not args.power:
            from pgtheory.oracles.audit import resolve_target

            resolve_target(args.target)
        if args.command in ("train", "scale") and args.env:
            import gymnasium
            import pgtheory.oracles.envs  # noqa: F401  (registers the pgtheory/ ids)

            gymnasium.spec(args.env)
        if args.command == "train" and args.set:
            from pgtheory.implementations import ALGORITHMS
            from pgtheory.implementations.train import parse_overrides

            parse_overrides(args.set, ALGORITHMS[args.algorithm][1])
        return 0

    for name in ("_demo", "_prove", "_check", "_audit", "_train", "_scale"):
        monkeypatch.setattr(cli, name, instead)
    assert cli.main(argv) == 0
    assert seen, "the subcommand was not dispatched"


def _extras_declared() -> set[str]:
    """The keys of ``[project.optional-dependencies]`` (no tomllib: Python 3.10 is supported)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = re.search(r"^\[project\.optional-dependencies\]\n(.*?)(?=^\[)", text, re.M | re.S)
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section.group(1), re.M)) if section else set()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.id for e in EXAMPLES])
def test_documented_command(example: Example, tmp_path_factory, monkeypatch):
    mode, _why = how_checked(example.command)
    _, argv = split_command(example.command)
    if mode == "extras":
        named = {x.strip() for spec in re.findall(r"\[([^\]]+)\]", example.command)
                 for x in spec.split(",")}
        assert named <= _extras_declared(), (
            f"{example.id}: extras {sorted(named - _extras_declared())} are not declared in "
            f"pyproject.toml")
        return
    if mode == "dry-run":
        res = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, f"{example.id}: make -n failed:\n{res.stderr}"
        return
    if mode == "arguments":
        check_arguments(argv[1:], monkeypatch)
        return
    cwd = REPO if runs_in_repo(example.command) else tmp_path_factory.mktemp("docs-example")
    if mode == "collect":
        res = run_once(f"{example.command} --collect-only -q", cwd)
        assert res.returncode == 0, f"{example.id}: collection failed:\n{res.stdout[-3000:]}"
        return
    res = run_once(example.command, cwd)
    assert res.returncode == example.status, (
        f"{example.id}: `{example.command}` exited {res.returncode}, the page shows "
        f"{example.status}\nstdout:\n{res.stdout[-3000:]}\nstderr:\n{res.stderr[-3000:]}")
    missing = missing_lines(example.output, res.stdout)
    assert not missing, (
        f"{example.id}: these shown lines no longer appear in the output of "
        f"`{example.command}`:\n" + "\n".join(missing) + f"\n\nactual stdout:\n{res.stdout}")


@pytest.mark.parametrize("page", sorted(SESSIONS))
def test_documented_session(page):
    globs: dict = {}
    for line, text in SESSIONS[page]:
        test = doctest.DocTestParser().get_doctest(text, globs, page, page, line)
        runner = doctest.DocTestRunner(
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
        out: list[str] = []
        runner.run(test, out=out.append, clear_globs=False)
        assert runner.failures == 0, "".join(out)
        globs = test.globs  # DocTest copies the namespace it is given


def test_examples_were_found():
    """The extraction works: the README's three jobs and the guides' sessions are seen."""
    readme = [e.command for e in EXAMPLES if e.page == "README.md"]
    assert any(c.startswith("pgtheory audit") for c in readme)
    assert any(c.startswith("pytest --pg-target") for c in readme)
    assert any(c.startswith("pgtheory check") for c in readme)
    assert {"make audit", "make test"} <= set(readme)
    assert sum(len(blocks) for blocks in SESSIONS.values()) >= 4


def test_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install 'pgtheory[docs]')")
    env = _env()
    env["NO_MKDOCS_2_WARNING"] = "1"
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                          str(REPO / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert res.returncode == 0, f"mkdocs build --strict failed:\n{res.stderr[-5000:]}"
    assert (tmp_path / "site" / "index.html").exists()
