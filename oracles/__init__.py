"""Oracles that validate policy-gradient implementations against exact theory.

Not built yet: this package is reserved by the product layout and is filled in by the
oracles issue (strategies, oracle environments, checks, pytest plugin). It exports nothing.
"""

__all__: list[str] = []
