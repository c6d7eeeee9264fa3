"""Check the import-linter contracts (importlinter.ini) against the installed layout.

The repository keeps oracles/, implementations/, proofs/ and lab/ at its top level and installs
them as pgtheory.oracles, pgtheory.implementations, pgtheory.proofs and pgtheory.lab
(pyproject.toml, package-dir). import-linter finds modules by walking the package's folder, so
this script first lays the installed tree out as links to the source files in a temporary
folder, then runs the contracts there. Usage: ``python tools/lint_imports.py [--tree DIR]``;
exit 0 when every contract is kept, 1 when one is broken.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = {"pgtheory": "pgtheory", "pgtheory/oracles": "oracles",
          "pgtheory/implementations": "implementations", "pgtheory/proofs": "proofs",
          "pgtheory/lab": "lab"}
CONFIG = ROOT / "importlinter.ini"


def build_tree(dest: Path) -> Path:
    """Link every ``.py`` source file into ``dest`` at its installed module path."""
    for installed, source in LAYOUT.items():
        target = dest / installed
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted((ROOT / source).glob("*.py")):
            link = target / f.name
            if not link.exists():
                os.symlink(f, link)
    return dest


def lint(tree: Path, config: Path = CONFIG, contracts: tuple[str, ...] = ()) -> int:
    """Run import-linter on ``tree`` with ``config`` (only ``contracts`` when given, by id);
    returns its exit status (0 kept, 1 broken)."""
    from importlinter.cli import lint_imports

    config = config.resolve()
    os.chdir(tree)  # import-linter puts the working directory first on sys.path
    sys.path.insert(0, str(tree))
    for name in [m for m in sys.modules if m == "pgtheory" or m.startswith("pgtheory.")]:
        del sys.modules[name]
    try:
        return lint_imports(config_filename=str(config), limit_to_contracts=contracts,
                            no_cache=True, no_logo=True)
    finally:
        sys.path.remove(str(tree))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/lint_imports.py")
    parser.add_argument("--tree", type=Path, help="lay the tree out here (default: a temp dir)")
    parser.add_argument("--contract", action="append", default=[],
                        help="check only this contract (its id in importlinter.ini); repeatable")
    args = parser.parse_args(argv)
    contracts = tuple(args.contract)
    if args.tree:
        return lint(build_tree(args.tree), contracts=contracts)
    with tempfile.TemporaryDirectory() as tmp:
        return lint(build_tree(Path(tmp)), contracts=contracts)


if __name__ == "__main__":
    sys.exit(main())
