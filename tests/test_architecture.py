"""The layering of pgtheory (docs/architecture.md), checked.

* The import-linter contracts of ``importlinter.ini`` hold on the installed layout, and each one
  fails when a violation is seeded into a copy of the tree (so none of them holds vacuously).
* No import cycle between any two modules (packages' ``__init__`` included).
* No private name (``_x``) is imported or used across modules of the library or the lab.
* Every module of the core folder is named in the core contract, so a new one cannot escape it.
"""

from __future__ import annotations

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason="import-linter is in the 'test' extra")

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "lint_imports.py"
LAYOUT = {"pgtheory": "pgtheory", "pgtheory.oracles": "oracles",
          "pgtheory.implementations": "implementations", "pgtheory.proofs": "proofs",
          "pgtheory.lab": "lab"}


def _lint(tree: Path, *contracts: str) -> subprocess.CompletedProcess:
    args = [sys.executable, str(SCRIPT), "--tree", str(tree)]
    for c in contracts:
        args += ["--contract", c]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tree)


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    for package, folder in LAYOUT.items():
        dest = tree.joinpath(*package.split("."))
        dest.mkdir(parents=True, exist_ok=True)
        for f in (ROOT / folder).glob("*.py"):
            os.symlink(f, dest / f.name)
    return tree


def _seed(tree: Path, module: str, line: str) -> None:
    """Replace ``module``'s link in ``tree`` by a copy with ``line`` appended."""
    package, _, name = module.rpartition(".")
    path = tree.joinpath(*package.split("."), name + ".py")
    text = path.read_text()
    path.unlink()
    path.write_text(text + "\n" + line + "\n")


def test_contracts_hold():
    run = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "BROKEN" not in run.stdout


SEEDED = [
    # (contract id, module the violation goes into, the violating import)
    ("core", "pgtheory.evaluation", "import torch"),
    ("core", "pgtheory.mdp", "import pgtheory.oracles.results"),
    ("layers", "pgtheory.oracles.protocol", "import pgtheory.oracles.suite"),
    ("layers", "pgtheory.oracles.suite", "import pgtheory.lab.power"),
    ("layers", "pgtheory.implementations.core", "import pgtheory.oracles.suite"),
    ("proofs", "pgtheory.proofs.formulas", "import pgtheory.oracles.results"),
    ("checks-without-hypothesis", "pgtheory.oracles.update", "import hypothesis"),
    ("acyclic", "pgtheory.lab.scale_report", "import pgtheory.lab.scale"),
]


def test_every_contract_is_seeded():
    config = configparser.ConfigParser()
    config.read(ROOT / "importlinter.ini")
    ids = {s.split(":")[-1] for s in config.sections() if s.startswith("importlinter:contract:")}
    assert ids == {c for c, _, _ in SEEDED}


@pytest.mark.parametrize(("contract", "module", "line"), SEEDED,
                         ids=[f"{c}-{m.rsplit('.', 1)[1]}" for c, m, _ in SEEDED])
def test_a_seeded_violation_breaks_its_contract(tmp_path, contract, module, line):
    tree = _tree(tmp_path)
    assert _lint(tree, contract).returncode == 0
    _seed(tree, module, line)
    run = _lint(tree, contract)
    assert run.returncode == 1 and "BROKEN" in run.stdout, run.stdout[-3000:]


def test_core_contract_names_every_core_module():
    config = configparser.ConfigParser()
    config.read(ROOT / "importlinter.ini")
    listed = set(config["importlinter:contract:core"]["source_modules"].split())
    core = {f"pgtheory.{p.stem}" for p in (ROOT / "pgtheory").glob("*.py")
            if p.stem not in ("__init__", "cli")}
    assert core == listed


def test_layers_contract_places_every_oracles_module():
    """A new module of pgtheory.oracles must be given its layer (an unlisted one is unchecked)."""
    config = configparser.ConfigParser()
    config.read(ROOT / "importlinter.ini")
    text = config["importlinter:contract:layers"]["layers"]
    listed = {m.strip() for line in text.splitlines() for m in line.replace(":", "|").split("|")}
    modules = {f"pgtheory.oracles.{p.stem}" for p in (ROOT / "oracles").glob("*.py")
               if p.stem != "__init__"}
    assert modules - listed == set()


# ------------------------------------------------------------------ cycles between modules
def _graph(tree: Path) -> dict[str, set[str]]:
    code = ("import grimp, json, sys; g = grimp.build_graph('pgtheory'); "
            "print(json.dumps({m: sorted(i for i in g.find_modules_directly_imported_by(m) "
            "if i.startswith('pgtheory')) for m in g.modules if m.startswith('pgtheory')}))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})
    assert run.returncode == 0, run.stderr[-2000:]
    import json

    return {k: set(v) for k, v in json.loads(run.stdout).items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop()
                        on_stack.discard(m)
                        comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_no_import_cycle_between_modules(tmp_path):
    tree = _tree(tmp_path)
    assert _cycles(_graph(tree)) == []
    _seed(tree, "pgtheory.oracles.results", "import pgtheory.oracles.suite")
    assert any("pgtheory.oracles.results" in c for c in _cycles(_graph(tree)))


# ------------------------------------------------------------------ private names across modules
def _module_of(path: Path) -> str:
    for package, folder in LAYOUT.items():
        if path.parent == ROOT / folder:
            return package if path.stem == "__init__" else f"{package}.{path.stem}"
    raise ValueError(path)


def _is_module(name: str) -> bool:
    for package, folder in sorted(LAYOUT.items(), key=lambda x: -len(x[0])):
        if name == package:
            return True
        if name.startswith(package + "."):
            rest = name[len(package) + 1:]
            return "." not in rest and (ROOT / folder / f"{rest}.py").exists()
    return False


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(source: str, module: str) -> list[str]:
    """``module``'s uses of another pgtheory module's private names, as 'line: what' strings."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("pgtheory") and a.asname:
                    aliases[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pgtheory"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if _is_module(full):
                    aliases[a.asname or a.name] = full
                elif _private(a.name) and node.module != module:
                    found.append(f"{node.lineno}: from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in aliases and _private(node.attr)
                and aliases[node.value.id] != module):
            found.append(f"{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_modules():
    bad = {}
    for folder in LAYOUT.values():
        for path in sorted((ROOT / folder).glob("*.py")):
            uses = private_uses(path.read_text(), _module_of(path))
            if uses:
                bad[str(path.relative_to(ROOT))] = uses
    assert bad == {}


def test_the_private_name_scan_finds_seeded_uses():
    src = ("from pgtheory.oracles.components import _cg_reference\n"
           "from pgtheory.oracles import suite\n"
           "import pgtheory.implementations.core as core\n"
           "x = suite._policy_head_checks\ny = core._LOG_2PI\n")
    found = private_uses(src, "pgtheory.lab.power")
    assert len(found) == 3, found
    assert private_uses("from pgtheory.oracles import suite\nx = suite.run_suite\n",
                        "pgtheory.lab.power") == []

