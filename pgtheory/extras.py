"""Optional dependencies, grouped into the ``pip install 'pgtheory[EXTRA]'`` extras.

The exact-theory core needs numpy and scipy only. Everything else is an extra; importing a part
of the package whose extra is missing raises :class:`MissingExtraError` with one line naming the
command that installs it.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Mapping

__all__ = ["EXTRAS", "MissingExtraError", "lazy_exports", "require"]

#: extra name -> (import names it provides, what it is for)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "oracles": (("torch", "gymnasium", "hypothesis", "tqdm"),
                "the oracle checks, the audit and the pytest plugin"),
    "sb3": (("stable_baselines3", "sb3_contrib"), "auditing Stable-Baselines3 and sb3-contrib"),
    "mujoco": (("gymnasium", "mujoco"),
               "MuJoCo environments (training, the scale report, the MuJoCo LQR anchor)"),
    "proofs": (("sympy",), "symbolic proofs and the formula checker"),
    "train": (("tensorboard", "matplotlib"), "`pgtheory train` logs and learning curves"),
    "ray": (("ray",), "running campaigns as Ray tasks (--ray, --ray-address)"),
}


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


def require(extra: str, what: str | None = None) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is importable.

    Modules of the optional parts call it before their optional imports, so that a missing
    dependency is one line naming the command that installs it rather than a traceback ending
    in ``ModuleNotFoundError``. Only looks the modules up (``importlib.util.find_spec``); imports
    nothing.

    Parameters
    ----------
    extra : str
        A key of :data:`EXTRAS`.
    what : str, optional
        What needs the extra (default: the extra's purpose in :data:`EXTRAS`).

    Raises
    ------
    MissingExtraError
        One line: ``<module> is not installed (needed for <what>): pip install
        'pgtheory[<extra>]'``.
    KeyError
        ``extra`` is not a key of :data:`EXTRAS` (a programming error, not user input).
    """
    modules, purpose = EXTRAS[extra]
    for name in modules:
        if importlib.util.find_spec(name) is None:
            raise MissingExtraError(
                f"{name} is not installed (needed for {what or purpose}): "
                f"pip install 'pgtheory[{extra}]'")


def lazy_exports(package: str, exports: Mapping[str, str], *, submodules: Iterable[str] = (),
                 computed: Mapping[str, Callable[[], object]] | None = None):
    """The PEP 562 ``__getattr__`` and ``__dir__`` of a package that re-exports names lazily,
    so that importing it loads no optional dependency.

    Parameters
    ----------
    package : str
        The package's ``__name__``.
    exports : mapping
        Exported name -> the submodule (relative to ``package``) that defines it.
    submodules : iterable of str
        Submodules reachable as attributes (``package.name``).
    computed : mapping, optional
        Exported name -> zero-argument function building its value on first use.

    Returns
    -------
    (__getattr__, __dir__)
        A value is imported (or computed) on first access and then cached in the package.

    Raises
    ------
    AttributeError
        From ``__getattr__``: the name is not exported.
    MissingExtraError
        From ``__getattr__``: the submodule needs an extra that is not installed.
    """
    submodules, computed = frozenset(submodules), dict(computed or {})

    def __getattr__(name: str):
        if name in computed:
            value = computed[name]()
        elif name in exports:
            value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        elif name in submodules:
            return importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        module = sys.modules[package]
        return sorted({*vars(module), *getattr(module, "__all__", ()), *submodules})

    return __getattr__, __dir__
