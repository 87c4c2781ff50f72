"""One LDAM round, shared by the callback and the CLI: every weight variant sampled with common random numbers.

- :mod:`~lightning_ldam.engine.rounds`: planning and running a round;
- :mod:`~lightning_ldam.engine.persistent_chains`: each variant's chains carried from one round to the next.
"""
