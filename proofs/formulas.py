"""Check a user's formula against the reference for a named quantity.

A user names a quantity (``list_quantities()``) and gives an expression as text using the
documented symbol names; :func:`check_formula` answers whether it equals the reference (proved
symbolically, or checked at random points), and if not, a point where it differs and the
correct expression. ``COMMON_WRONG_FORMS`` catalogues slips seen in lecture notes and code;
each is rejected (tests show it).

Expression syntax: sympy (``**`` for powers, ``log``, ``exp``, ``sqrt``, ``pi``), plus
``Min``/``Max`` (also ``min``/``max``) and ``clip(x, lo, hi) = Min(Max(x, lo), hi)``.
Decimal literals are exact: ``0.5`` is read as 1/2 and ``2.0`` as 2 (the decimal text is
converted to a rational, never to a binary float), so ``x**0.5`` is ``sqrt(x)``. ``^`` is
refused with a hint to write ``**`` (in Python and sympy ``^`` is XOR).

Limits: the text may hold at most ``MAX_EXPRESSION_CHARS`` characters and its parsed tree at
most ``MAX_EXPRESSION_NODES`` nodes; a constant exponent may not exceed ``MAX_EXPONENT`` in
absolute value (``lam**(10**10)`` is refused before anything is evaluated); and parsing,
simplification and evaluation run in a worker process that is stopped after ``timeout``
seconds (default ``DEFAULT_TIMEOUT``). Exceeding a limit raises :class:`FormulaLimitError`.

Parsing uses :func:`sympy.parsing.sympy_parser.parse_expr`, which evaluates Python: only pass
text you would run yourself.
"""

from __future__ import annotations

from pgtheory.extras import require

require("proofs")  # before the optional imports: a missing extra is one line naming it

import ast
import atexit
import cmath
import dataclasses
import math
import operator
import random
import threading

import sympy as sp
from pgtheory.proofs._core import symbolic_zero
from sympy.parsing.sympy_parser import parse_expr, rationalize, standard_transformations

__all__ = [
    "COMMON_WRONG_FORMS",
    "DEFAULT_TIMEOUT",
    "MAX_EXPONENT",
    "MAX_EXPONENT_DENOMINATOR",
    "MAX_EXPRESSION_CHARS",
    "MAX_EXPRESSION_NODES",
    "MAX_LITERAL_DIGITS",
    "RELATIVE_TOLERANCE",
    "FormulaCheck",
    "FormulaError",
    "FormulaLimitError",
    "Quantity",
    "check_formula",
    "list_quantities",
]

#: Wall-clock limit (seconds) on parsing, simplifying and evaluating one expression.
DEFAULT_TIMEOUT = 20.0
#: Largest absolute value of a constant exponent (``x**k``) accepted.
MAX_EXPONENT = 10_000
#: Largest denominator of a constant rational exponent accepted.
MAX_EXPONENT_DENOMINATOR = 10**6
#: Longest expression text accepted (characters).
MAX_EXPRESSION_CHARS = 2000
#: Largest parsed expression tree accepted (nodes).
MAX_EXPRESSION_NODES = 5000
#: Largest integer literal accepted (decimal digits).
MAX_LITERAL_DIGITS = 100
#: Two values agree at a point when ``|yours - reference| <= RELATIVE_TOLERANCE * max(1,
#: |reference|)``; values are computed exactly (rationals) or to ``_DIGITS`` significant digits.
RELATIVE_TOLERANCE = 1e-20
_DIGITS = 50
_TRANSFORMATIONS = (*standard_transformations, rationalize)


class FormulaError(ValueError):
    """The quantity is unknown or the expression cannot be parsed with the allowed symbols.

    A ``ValueError`` subclass; the message is one line naming what was expected and what was
    received.
    """


class FormulaLimitError(FormulaError):
    """The expression exceeds a size limit or its check exceeds the time limit.

    A :class:`FormulaError` (hence ``ValueError``) subclass; the message is one line naming
    the limit and what was received.
    """


def _one_line(text) -> str:
    return " ".join(str(text).split())


def clip(x, lo, hi):
    """``Min(Max(x, lo), hi)`` (the ``clip`` available in expressions); scalars or sympy."""
    return sp.Min(sp.Max(x, lo), hi)


def _unit(rng):  # (0.05, 0.95)
    return sp.Rational(rng.randint(50, 950), 1000)


def _pos(rng):
    return sp.Rational(rng.randint(50, 3000), 1000)


def _real(rng):
    return sp.Rational(rng.randint(-3000, 3000), 1000) or sp.Rational(1, 7)


def _clip_eps(rng):
    return sp.Rational(rng.randint(50, 500), 1000)


def _nonneg_int(rng):
    return sp.Integer(rng.randint(0, 6))


@dataclasses.dataclass(frozen=True)
class Quantity:
    """A named quantity: its symbols (name -> sampling domain), reference text, and source."""

    name: str
    description: str
    symbols: dict
    reference: str
    source: str


QUANTITIES = {q.name: q for q in [
    Quantity("gaussian_log_prob", "log N(a; mu, sigma^2)", dict(a=_real, mu=_real, sigma=_pos),
             "-(a - mu)**2/(2*sigma**2) - log(sigma) - log(2*pi)/2", "standard"),
    Quantity("gaussian_score_mu", "d log N(a; mu, sigma^2) / d mu",
             dict(a=_real, mu=_real, sigma=_pos), "(a - mu)/sigma**2", "Williams (1992), Sec. 6"),
    Quantity("gaussian_score_sigma", "d log N(a; mu, sigma^2) / d sigma",
             dict(a=_real, mu=_real, sigma=_pos), "((a - mu)**2 - sigma**2)/sigma**3",
             "Williams (1992), Sec. 6"),
    Quantity("gaussian_score_log_sigma", "d log N(a; mu, sigma^2) / d log sigma",
             dict(a=_real, mu=_real, sigma=_pos), "(a - mu)**2/sigma**2 - 1",
             "chain rule from the sigma score"),
    Quantity("gaussian_entropy", "entropy of N(mu, sigma^2) (nats)", dict(sigma=_pos),
             "log(sigma) + (1 + log(2*pi))/2", "standard"),
    Quantity("gaussian_kl", "KL(N(mu1, sigma1^2) || N(mu2, sigma2^2))",
             dict(mu1=_real, mu2=_real, sigma1=_pos, sigma2=_pos),
             "log(sigma2/sigma1) + (sigma1**2 + (mu1 - mu2)**2)/(2*sigma2**2) - 1/2",
             "theorem gaussian_kl (derived from the integral)"),
    Quantity("sigmoid_score", "d log sigmoid(theta) / d theta (two-action policy)",
             dict(theta=_real), "1 - 1/(1 + exp(-theta))", "theorem softmax_score"),
    Quantity("ppo_clipped_term", "PPO per-sample objective with ratio r, advantage A, clip eps",
             dict(r=_pos, A=_real, eps=_clip_eps), "Min(r*A, clip(r, 1 - eps, 1 + eps)*A)",
             "Schulman et al. (2017), arXiv:1707.06347v2, Eq. (7)"),
    Quantity("value_clip", "clipped value prediction around the old prediction v_old",
             dict(v=_real, v_old=_real, eps=_clip_eps), "v_old + clip(v - v_old, -eps, eps)",
             "OpenAI baselines ppo2 value clipping"),
    Quantity("gae_weight", "weight of delta_{t+l} in the GAE advantage",
             dict(gamma=_unit, lam=_unit, l=_nonneg_int), "(gamma*lam)**l",
             "theorem gae; Schulman et al. (2016), Eq. (16)"),
    Quantity("trpo_penalty_coefficient", "C in J(new) >= L - C KL_max, eps = max |A|",
             dict(eps=_pos, gamma=_unit), "4*eps*gamma/(1 - gamma)**2",
             "TRPO arXiv:1502.05477v5, Theorem 1 / Eq. (9)"),
    Quantity("natural_gradient_step_size", "beta in d = beta F^-1 g with (1/2) d^T F d = delta; "
             "gFg = g^T F^-1 g", dict(delta=_pos, gFg=_pos), "sqrt(2*delta/gFg)",
             "theorem natural_gradient_step; TRPO App. C"),
    Quantity("kl_k3", "k3 estimator of KL(q || p) from r = p(x)/q(x), x ~ q", dict(r=_pos),
             "(r - 1) - log(r)", "theorem kl_estimators"),
]}


@dataclasses.dataclass(frozen=True)
class FormulaCheck:
    """Result of :func:`check_formula`.

    Attributes
    ----------
    quantity : str
    correct : bool
    status : {"proved", "checked", "wrong"}
        ``proved``: sympy reduced the difference to 0; ``checked``: equal at every random
        point tried but not reduced; ``wrong``: a differing point was found.
    counterexample : dict or None
        A point (symbol name -> exact value as text) where the two differ beyond
        ``RELATIVE_TOLERANCE``, plus ``yours`` and ``reference`` (both values, printed with
        enough digits to differ) and ``difference`` (their absolute difference).
    reference : str
        The correct expression.
    message : str
    """

    quantity: str
    correct: bool
    status: str
    counterexample: dict | None
    reference: str
    message: str


def list_quantities() -> list[Quantity]:
    """The quantities :func:`check_formula` knows, with their symbols and references.

    Returns
    -------
    list of Quantity

    Raises
    ------
    Nothing.

    References
    ----------
    Each quantity's ``source`` field.
    """
    return list(QUANTITIES.values())


def _text_limits(text) -> str:
    """Checks on the raw text that need no parsing: type, emptiness, ``^``, length, and
    constant exponents / integer literals too large to evaluate (read from the Python AST,
    bounded in floating point, so ``10**10**10`` is refused without being computed)."""
    if not isinstance(text, str) or not text.strip():
        raise FormulaError(f"expression: expected non-empty text, received {_quote(text)}")
    if "^" in text:
        raise FormulaError(f"expression: expected ** for powers (in Python and sympy ^ is XOR), "
                           f"received ^ in {_quote(text)}; write {_quote(text.replace('^', '**'))}")
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FormulaLimitError(f"expression: size limit: expected at most "
                                f"{MAX_EXPRESSION_CHARS} characters, received {len(text)}")
    try:
        _ast_limits(text)
    except RecursionError:
        raise FormulaLimitError(f"expression: size limit: expected an expression nested at most "
                                f"a few hundred levels deep, received {_quote(text)}") from None
    return text


def _ast_limits(text: str) -> None:
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError):  # sympy-only syntax (3!, 0.[3]), deep nesting
        return  # parse_expr decides, in the worker
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, int)
                and not isinstance(node.value, bool)
                and node.value.bit_length() > 3.33 * MAX_LITERAL_DIGITS):
            raise FormulaLimitError(f"expression: size limit: expected integer literals of at "
                                    f"most {MAX_LITERAL_DIGITS} digits, received one of "
                                    f"about {int(node.value.bit_length() * 0.30103) + 1} "
                                    f"digits")
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
            value = _constant_value(node.right)
            bound = None if value is None else abs(value)
            if bound is not None and bound > MAX_EXPONENT:
                raise FormulaLimitError(
                    f"expression: size limit: expected constant exponents of absolute value at "
                    f"most {MAX_EXPONENT}, received exponent {_one_line(ast.unparse(node.right))} "
                    f"(about {bound:.3g}) in {_quote(text)}")


def _constant_value(node):
    """Value of a constant arithmetic AST node in floating point (complex where a power of a
    negative base needs it; ``inf`` once anything overflows, so nothing large is computed),
    or None when the node is not constant arithmetic (symbols, calls, division by 0)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, complex)):
        if isinstance(node.value, complex):
            return node.value
        try:
            return float(node.value)
        except OverflowError:
            return math.inf
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        v = _constant_value(node.operand)
        return None if v is None else (-v if isinstance(node.op, ast.USub) else v)
    if not isinstance(node, ast.BinOp):
        return None
    a, b = _constant_value(node.left), _constant_value(node.right)
    if a is None or b is None:
        return None
    if not (cmath.isfinite(a) and cmath.isfinite(b)):
        return math.inf
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Pow: operator.pow}
    op = ops.get(type(node.op))
    if op is None:
        return None
    try:
        v = op(a, b)
    except OverflowError:
        return math.inf
    except (ZeroDivisionError, ValueError):
        return None
    return v if cmath.isfinite(v) else math.inf


def _parse(text: str, q: Quantity):
    _text_limits(text)
    local = {name: sp.Symbol(name, positive=(dom in (_pos, _unit, _clip_eps)),
                             integer=(dom is _nonneg_int) or None)
             for name, dom in q.symbols.items()}
    fns = {"clip": clip, "Min": sp.Min, "Max": sp.Max, "min": sp.Min, "max": sp.Max,
           "log": sp.log, "exp": sp.exp, "sqrt": sp.sqrt, "pi": sp.pi, "Abs": sp.Abs,
           "abs": sp.Abs}
    try:
        expr = parse_expr(text, local_dict={**fns, **local}, transformations=_TRANSFORMATIONS)
        expr = sp.sympify(expr)
    except FormulaError:
        raise
    except Exception as exc:
        raise FormulaError(f"expression: expected sympy syntax in the symbols "
                           f"{sorted(q.symbols)}, received {_quote(text)}, which could not parse "
                           f"({type(exc).__name__}: {_one_line(exc)})") from None
    if (not isinstance(expr, sp.Expr) or isinstance(expr, sp.Lambda)
            or getattr(expr, "is_Matrix", False)):
        raise FormulaError(f"expression: expected a numeric expression in the symbols "
                           f"{sorted(q.symbols)}, received {type(expr).__name__} from "
                           f"{_quote(text)}")
    unknown = {str(s) for s in expr.free_symbols} - set(q.symbols)
    if unknown:
        raise FormulaError(f"expression: expected only the symbols {sorted(q.symbols)} of "
                           f"quantity {q.name!r}, received unknown symbols {sorted(unknown)}")
    n_nodes = 0
    for node in sp.preorder_traversal(expr):
        n_nodes += 1
        if n_nodes > MAX_EXPRESSION_NODES:
            raise FormulaLimitError(f"expression: size limit: expected at most "
                                    f"{MAX_EXPRESSION_NODES} nodes in the parsed expression, "
                                    f"received more from {_quote(text)}")
        if isinstance(node, sp.Pow) and node.exp.is_Number and node.exp.is_finite:
            e = node.exp
            if abs(e) > MAX_EXPONENT or (e.is_Rational and e.q > MAX_EXPONENT_DENOMINATOR):
                raise FormulaLimitError(
                    f"expression: size limit: expected constant exponents of absolute value at "
                    f"most {MAX_EXPONENT} (denominator at most {MAX_EXPONENT_DENOMINATOR}), "
                    f"received exponent {_short(e)} in {_quote(text)}")
    # any Float left (e.g. built by a function call): exact rational of its decimal text
    floats = expr.atoms(sp.Float)
    if floats:
        expr = expr.xreplace({f: sp.Rational(str(f)) for f in floats})
    return expr, local


def _quote(text, limit: int = 120) -> str:
    """``repr`` of ``text``, shortened to about ``limit`` characters (for one-line messages)."""
    return repr(_short(text, limit)) if isinstance(text, str) else repr(text)


def _short(x, limit: int = 60) -> str:
    s = str(x)
    return s if len(s) <= limit else f"{s[:limit // 2]}...{s[-limit // 2:]} ({len(s)} chars)"


def _compare_at_points(user, ref, syms, domains, *, n: int, seed: int):
    """Evaluate both expressions at ``n`` random points of the quantity's domains.

    Returns None when they agree at every point (exactly for rational values, else within
    ``RELATIVE_TOLERANCE`` at ``_DIGITS`` significant digits; points where both are undefined
    are skipped), or ``(point, yours, reference, gap)`` for the first point where they differ.
    """
    rng = random.Random(seed)
    for _ in range(n):
        point = {s: domains[s](rng) for s in syms}
        yours, want = user.xreplace(point), ref.xreplace(point)
        if yours.is_Rational and want.is_Rational:
            if yours != want:
                return point, yours, want, abs(yours - want)
            continue
        y, w = sp.N(yours, _DIGITS), sp.N(want, _DIGITS)
        y_ok = y.is_number and y.is_finite is True
        w_ok = w.is_number and w.is_finite is True
        if not y_ok and not w_ok:
            continue
        if y_ok != w_ok:
            return point, yours, want, sp.oo
        gap = sp.N(sp.Abs(yours - want), _DIGITS)
        scale = max(sp.Integer(1), sp.N(sp.Abs(want), _DIGITS))
        if not gap.is_number or gap.is_finite is not True or gap > RELATIVE_TOLERANCE * scale:
            return point, yours, want, gap
    return None


def _show_pair(yours, want, gap) -> tuple[str, str]:
    """Both values as text, with enough significant digits that they visibly differ."""
    digits = 12
    if gap.is_number and gap.is_finite and gap > 0:
        scale = max(sp.Integer(1), sp.Abs(want))
        need = sp.ceiling(-sp.log(gap / scale, 10) + 4)
        digits = max(12, int(need)) if need.is_Integer else _DIGITS
    if digits > _DIGITS and yours.is_Rational and want.is_Rational:  # beyond 50 digits: exact
        return _short(yours, 200), _short(want, 200)
    digits = min(digits, _DIGITS)
    shown = tuple(str(v) if v.is_Integer else str(sp.N(v, digits)) for v in (yours, want))
    if shown[0] == shown[1]:  # defensive: never print two equal numbers as a counterexample
        shown = (str(sp.N(yours, _DIGITS)), str(sp.N(want, _DIGITS)))
    return shown


def _check_local(quantity: str, expression: str, n_points: int, seed: int) -> FormulaCheck:
    """The comparison itself, in the calling process (no time limit)."""
    q = QUANTITIES[quantity]
    user, local = _parse(expression, q)
    ref, _ = _parse(q.reference, q)
    syms = [local[n] for n in q.symbols]
    domains = {local[n]: dom for n, dom in q.symbols.items()}
    diff = user - ref
    found = _compare_at_points(user, ref, syms, domains, n=12, seed=seed)
    if found is None and (diff == 0 or symbolic_zero(diff)):
        return FormulaCheck(quantity, True, "proved", None, q.reference,
                            f"correct: {expression} equals the reference (proved symbolically)")
    if found is None:
        found = _compare_at_points(user, ref, syms, domains, n=n_points, seed=seed + 1)
    if found is None:
        return FormulaCheck(quantity, True, "checked", None, q.reference,
                            f"agrees with the reference at {n_points + 12} random points "
                            f"(within relative tolerance {RELATIVE_TOLERANCE:g}; not reduced "
                            f"symbolically)")
    point, yours, want, gap = found
    shown_y, shown_w = _show_pair(yours, want, gap)
    gap_text = "undefined: one side is not a finite number" if gap is sp.oo else str(sp.N(gap, 3))
    cex = {str(k): str(v) for k, v in point.items()}
    cex.update(yours=shown_y, reference=shown_w, difference=gap_text)
    where = ", ".join(f"{k} = {v}" for k, v in point.items())
    return FormulaCheck(quantity, False, "wrong", cex, q.reference,
                        f"wrong: at {where} your expression gives {shown_y} but {q.name} is "
                        f"{shown_w} (difference {gap_text}, beyond the relative tolerance "
                        f"{RELATIVE_TOLERANCE:g}); correct: {q.reference} (source: {q.source})")


# --- the worker process that enforces the time limit -------------------------------------------

_WORKER_LOCK = threading.Lock()
_WORKER: list = []  # [_Worker] while a worker is alive
_WORKER_ATEXIT: list = []  # [True] once _stop_worker is registered to run at exit


def _check_guarded(quantity: str, expression: str, n_points: int, seed: int) -> tuple:
    """``_check_local`` with every failure turned into a reply ``(kind, value)``: kind is
    ``ok`` (value: FormulaCheck), ``limit`` or ``error`` (value: one-line message)."""
    try:
        return ("ok", _check_local(quantity, expression, n_points, seed))
    except FormulaLimitError as exc:
        return ("limit", _one_line(exc))
    except FormulaError as exc:
        return ("error", _one_line(exc))
    except MemoryError:
        return ("limit", "expression: size limit: expected a check within the available "
                         "memory, received one that needed more (MemoryError)")
    except RecursionError:
        return ("limit", "expression: size limit: expected an expression sympy can evaluate, "
                         "received one nested too deeply (RecursionError)")
    except ValueError as exc:
        if "int_max_str_digits" not in str(exc):
            return ("error", f"expression: could not evaluate {_quote(expression)} "
                             f"(ValueError: {_one_line(exc)}); expected a real scalar "
                             f"expression defined on the quantity's domain")
        return ("limit", f"expression: size limit: expected numbers of at most a few thousand "
                         f"digits, received {_quote(expression)}, which produced a larger one")
    except Exception as exc:
        return ("error", f"expression: could not evaluate {_quote(expression)} "
                         f"({type(exc).__name__}: {_one_line(exc)}); expected a real scalar "
                         f"expression defined on the quantity's domain")


_MEMORY_CAP = 4 * 2**30  # bytes of address space the worker may add to what it uses at start
_START_LIMIT = 120.0  # seconds for a worker to start (import sympy); not part of `timeout`


def _serve() -> None:  # pragma: no cover - runs in the worker process
    """Worker loop: read pickled ``(quantity, expression, n_points, seed)`` from stdin, write
    the pickled reply of :func:`_check_guarded` to the original stdout."""
    import os
    import pickle
    import sys

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints go to stderr, never into the protocol
    inp = sys.stdin.buffer
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * resource.getpagesize()
        cap = used + _MEMORY_CAP
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except Exception:  # no resource module or /proc: the time limit still applies
        pass
    pickle.dump(("ready", None), out)
    out.flush()
    while True:
        try:
            args = pickle.load(inp)
        except (EOFError, OSError, pickle.UnpicklingError):
            return
        reply = _check_guarded(*args)
        pickle.dump(reply, out)
        out.flush()
        if reply[0] == "limit" and "MemoryError" in reply[1]:
            return  # start afresh next time


@dataclasses.dataclass
class _Worker:
    proc: object
    replies: object  # queue.Queue of replies, ("eof", None) once the worker's stdout closes
    errors: object  # temporary file holding the worker's stderr


def _read_replies(stream, replies) -> None:
    import pickle

    while True:
        try:
            replies.put(pickle.load(stream))
        except Exception:
            replies.put(("eof", None))
            return


def _worker_ended(w: _Worker) -> str:
    """One line on why a worker ended: its exit code and the last line it wrote to stderr."""
    try:
        code = w.proc.wait(5)
    except Exception:
        code = None
    try:
        w.errors.seek(0)
        lines = [ln for ln in w.errors.read().decode(errors="replace").splitlines() if ln.strip()]
    except Exception:
        lines = []
    return f"exit code {code}" + (f", last message: {_one_line(lines[-1])}" if lines else "")


def _stop_worker() -> None:
    if _WORKER:
        w = _WORKER.pop()
        _WORKER.clear()
        if w.proc.poll() is None:
            w.proc.kill()
        for stream in (w.proc.stdin, w.proc.stdout):
            try:
                stream.close()
            except Exception:
                pass
        try:
            w.proc.wait(5)
        except Exception:
            pass
        w.errors.close()


def _start_worker() -> _Worker:
    import os
    import queue
    import subprocess
    import sys
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "from pgtheory.proofs.formulas import _serve; _serve()")
    errors = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen([sys.executable, "-c", code, root], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=errors)
    except Exception as exc:
        errors.close()
        raise FormulaError(f"timeout: expected to start a worker process to enforce the time "
                           f"limit, received {type(exc).__name__}: {_one_line(exc)}; pass "
                           f"timeout=None to check without a time limit") from None
    replies = queue.Queue()
    threading.Thread(target=_read_replies, args=(proc.stdout, replies), daemon=True,
                     name="pgtheory-formula-replies").start()
    w = _Worker(proc, replies, errors)
    if not _WORKER_ATEXIT:
        atexit.register(_stop_worker)
        _WORKER_ATEXIT.append(True)
    _WORKER[:] = [w]
    try:
        kind = replies.get(timeout=_START_LIMIT)[0]
    except queue.Empty:
        kind = "timeout"
    if kind != "ready":
        why = (f"none within {_START_LIMIT:g} s" if kind == "timeout"
               else f"a worker that ended ({_worker_ended(w)})")
        _stop_worker()
        raise FormulaError(f"timeout: expected the worker process that enforces the time limit "
                           f"to start, received {why}; pass timeout=None to check without a "
                           f"time limit")
    return w


def _run_in_worker(args: tuple, timeout: float):
    """The reply of ``_check_guarded(*args)`` from the worker, or None after ``timeout`` s
    (the worker is then killed; the next call starts a new one)."""
    import pickle
    import queue

    with _WORKER_LOCK:
        if _WORKER and _WORKER[0].proc.poll() is not None:
            _stop_worker()
        w = _WORKER[0] if _WORKER else _start_worker()
        try:
            pickle.dump(args, w.proc.stdin)
            w.proc.stdin.flush()
            reply = w.replies.get(timeout=timeout)
        except queue.Empty:
            _stop_worker()
            return None
        except OSError:
            reply = ("eof", None)
        except BaseException:  # e.g. KeyboardInterrupt: never leave a reply pending
            _stop_worker()
            raise
        if reply[0] == "eof":
            why = _worker_ended(w)
            _stop_worker()
            return ("limit", f"expression: size limit: expected the check to finish within the "
                             f"worker's memory limit, received a worker that ended ({why})")
        return reply


def check_formula(quantity: str, expression: str, *, n_points: int = 60,
                  seed: int = 0, timeout: float | None = DEFAULT_TIMEOUT) -> FormulaCheck:
    """Compare ``expression`` with the reference for ``quantity``.

    Parameters
    ----------
    quantity : str
        A name from :func:`list_quantities`.
    expression : str
        The user's formula (a scalar expression) in the quantity's symbols, sympy syntax with
        ``**`` for powers. Decimal literals are exact (``0.5`` is 1/2).
    n_points : int
        Random points tried when sympy cannot reduce the difference symbolically (>= 1).
    seed : int
        Seed of the random points.
    timeout : float or None
        Wall-clock limit in seconds on parsing, simplifying and evaluating, enforced by
        running the check in a worker process (started once and reused; its start is not
        counted; killed and replaced when the limit is exceeded). ``None`` runs in the calling
        process with the size limits only.

    Returns
    -------
    FormulaCheck
        ``correct`` is True when the difference reduces to 0 (``proved``) or both agree within
        ``RELATIVE_TOLERANCE`` at every random point (``checked``); otherwise ``wrong`` with a
        point where they differ beyond the tolerance, both values printed with enough digits
        to show the difference.

    Raises
    ------
    FormulaError
        Unknown quantity, empty or unparsable text, ``^`` used for a power, symbols other
        than the documented ones, a non-numeric expression (e.g. a comparison), or a bad
        ``n_points``/``seed``/``timeout``.
    FormulaLimitError
        A size limit (``MAX_EXPRESSION_CHARS``, ``MAX_EXPRESSION_NODES``, ``MAX_EXPONENT``,
        ``MAX_LITERAL_DIGITS``, the worker's memory) or the time limit was exceeded. A
        subclass of :class:`FormulaError`; both are ``ValueError``.

    References
    ----------
    The quantity's ``source``; the theorems of :mod:`proofs`.
    """
    if not isinstance(quantity, str) or quantity not in QUANTITIES:
        raise FormulaError(f"quantity: expected one of {sorted(QUANTITIES)}, received "
                           f"{_quote(quantity)}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 1:
        raise FormulaError(f"n_points: expected an int >= 1, received {n_points!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FormulaError(f"seed: expected an int, received {seed!r}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise FormulaError(f"timeout: expected a finite number of seconds > 0 or None, "
                           f"received {timeout!r}")
    _text_limits(expression)  # cheap refusals without starting the worker
    args = (quantity, expression, n_points, seed)
    reply = _check_guarded(*args) if timeout is None else _run_in_worker(args, float(timeout))
    if reply is None:
        raise FormulaLimitError(f"expression: time limit: expected the check to finish within "
                                f"{timeout:g} s, received {_quote(expression)}, which took longer "
                                f"(stopped)")
    kind, value = reply
    if kind == "ok":
        return value
    if kind == "limit":
        raise FormulaLimitError(value)
    raise FormulaError(value)


# (quantity, wrong expression, what is wrong, where such slips are reported)
COMMON_WRONG_FORMS = [
    ("gaussian_score_sigma", "((a - sigma)**2 - sigma**2)/sigma**3",
     "(a - sigma)^2 in place of (a - mu)^2", "lecture notes"),
    ("gaussian_score_log_sigma", "(a - mu)**2/sigma**2", "the -1 dropped", "lecture notes"),
    ("gaussian_kl", "log(sigma2/sigma1) + (sigma1/sigma2 + (mu1 - mu2)**2/sigma2**2)/2 - 1/2",
     "square missing on the std ratio", "pat-coady/trpo #25 (catalogue: gaussian_kl_no_square)"),
    ("gaussian_entropy", "log(sigma) + 1/2", "log(2 pi)/2 dropped", "course code"),
    ("ppo_clipped_term", "Min(log(r)*A, clip(r, 1 - eps, 1 + eps)*A)",
     "log pi (log-ratio) in place of the ratio", "lecture notes"),
    ("ppo_clipped_term", "Max(r*A, clip(r, 1 - eps, 1 + eps)*A)", "max instead of min",
     "course code (catalogue: ppo_min_max_swapped)"),
    ("ppo_clipped_term", "Min(r*A, r*clip(A, 1 - eps, 1 + eps))", "clip applied to the advantage",
     "course code (catalogue: ppo_clip_on_advantage)"),
    ("value_clip", "v_old + clip(v - v_old, eps, -eps)", "clip bounds reversed",
     "catalogue: value_clip_bounds_reversed"),
    ("gae_weight", "lam**l", "lambda^l instead of (gamma lambda)^l",
     "course code (catalogue: gae_lambda_power)"),
    ("trpo_penalty_coefficient", "4*eps*gamma/(1 - gamma)", "(1 - gamma) not squared",
     "lecture notes"),
    ("trpo_penalty_coefficient", "2*eps*gamma/(1 - gamma)**2",
     "Kakade-Langford mixture constant used for the TRPO bound", "lecture notes"),
    ("natural_gradient_step_size", "sqrt(delta/gFg)", "factor 2 missing",
     "course code (catalogue: trpo_no_factor_two)"),
    ("natural_gradient_step_size", "2*delta/gFg", "square root missing",
     "course code (catalogue: trpo_no_sqrt)"),
    ("kl_k3", "(r - 1) + log(r)", "sign of the log flipped", "course code"),
    ("sigmoid_score", "1/(1 + exp(-theta))", "score of a = 1 written as pi instead of 1 - pi",
     "lecture notes"),
]

