"""Compact REINFORCE, A2C, TRPO and PPO in torch.

Not built yet: this package is reserved by the product layout and is filled in by the
implementations issue. It exports nothing.
"""

__all__: list[str] = []
