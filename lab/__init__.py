"""The project's own measurements of itself, apart from the library.

Seeded-defect mutants and their kill matrix, the Stable-Baselines3 bug catalogue, the power
study, the configuration campaign and the scale experiment. They use the library's public API
only; nothing in the library imports them (``pgtheory audit --power`` and ``pgtheory scale``
reach them from the command line).
"""
