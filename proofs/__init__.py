"""Symbolic (sympy) derivations behind policy-gradient methods.

Not built yet: this package is reserved by the product layout and is filled in by the proofs
issue. It exports nothing.
"""

__all__: list[str] = []
