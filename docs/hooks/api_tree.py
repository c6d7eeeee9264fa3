"""MkDocs hooks for the documentation site (mkdocs.yml: ``hooks``).

On import (when MkDocs loads its hooks, before mkdocstrings sets up its search paths, which
keep only paths that exist) this module lays out the source as it installs, so that
mkdocstrings finds the subpackages statically: the repository keeps ``oracles/``,
``implementations/``, ``proofs/`` and ``lab/`` beside ``pgtheory/`` and setuptools maps them
to ``pgtheory.oracles`` and so on, which griffe's static finder does not follow. The mirror is
a copy of the ``.py`` files under ``build/docs-api/`` (ignored by git), rebuilt on every
build. (Symbolic links do not do: griffe resolves them and scans the real folder.)

``on_page_content`` turns the Sphinx roles that some docstrings use (``:func:`~pgtheory.x```)
into plain code spans, as Sphinx would print them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

# folder in the repository -> where it installs under pgtheory/
_SUBPACKAGES = ("oracles", "implementations", "proofs", "lab")
_ROLES = "func|mod|class|meth|attr|data|exc|obj|const"
_ROLE = re.compile(r":(?:" + _ROLES + r"):<code>(~?)([^<]*)</code>")  # rendered as code
_ROLE_RAW = re.compile(r":(?:" + _ROLES + r"):`(~?)([^`<]*)`")  # left verbatim (inside code)


def _mirror(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for entry in sorted(src.iterdir()):
        if entry.is_dir() and (entry / "__init__.py").exists():
            _mirror(entry, dst / entry.name)
        elif entry.suffix in (".py", ".pyi"):
            shutil.copy2(entry, dst / entry.name)


def mirror_source(repo: Path) -> Path:
    """Copy the packages of ``repo`` to ``repo/build/docs-api`` as they install; return it."""
    root = repo / "build" / "docs-api"
    shutil.rmtree(root, ignore_errors=True)
    _mirror(repo / "pgtheory", root / "pgtheory")
    for name in _SUBPACKAGES:
        _mirror(repo / name, root / "pgtheory" / name)
    return root


# docs/hooks/api_tree.py -> the repository root
mirror_source(Path(__file__).resolve().parents[2])


def _name(match: re.Match) -> str:
    tilde, target = match.groups()
    return target.rsplit(".", 1)[-1] if tilde else target


def on_page_content(html, page, config, files):
    html = _ROLE.sub(lambda m: f"<code>{_name(m)}</code>", html)
    return _ROLE_RAW.sub(_name, html)
