"""Optional dependencies, grouped into the ``pip install 'pgtheory[EXTRA]'`` extras.

The exact-theory core needs numpy and scipy only. Everything else is an extra; importing a part
of the package whose extra is missing raises :class:`MissingExtraError` with one line naming the
command that installs it.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: extra name -> (import names it provides, what it is for)
EXTRAS: dict[str, tuple[tuple[str, ...], str]] = {
    "oracles": (("torch", "gymnasium", "hypothesis", "tqdm"),
                "the oracle checks, the audit and the pytest plugin"),
    "sb3": (("stable_baselines3", "sb3_contrib"), "auditing Stable-Baselines3 and sb3-contrib"),
    "mujoco": (("gymnasium", "mujoco"),
               "MuJoCo environments (training, the scale report, the MuJoCo LQR anchor)"),
    "proofs": (("sympy",), "symbolic proofs and the formula checker"),
    "train": (("tensorboard", "matplotlib"), "`pgtheory train` logs and learning curves"),
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
