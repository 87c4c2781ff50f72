"""The one error type of bad arguments: ``LDAMArgumentError`` names the argument it is about.

It subclasses both ``ValueError`` and ``TypeError``, so ``except ValueError`` and ``except TypeError`` keep
catching what they caught before the type existed; ``.argument`` lets the CLI map it to its option names.
"""
from __future__ import annotations

__all__ = ["LDAMArgumentError"]


class LDAMArgumentError(ValueError, TypeError):
    """A bad argument: ``str(err)`` is ``"<argument>: <what is accepted>, got <value>"``.

    Args:
        argument: the argument's name as the caller spells it (``"sampler_kwargs['step_size']"``, ``"neurons"``).
        message: what is wrong: the accepted values and the value given.

    Example::

        >>> err = LDAMArgumentError("chains", "expected a finite int > 0, got 0")
        >>> err.argument, str(err)
        ('chains', 'chains: expected a finite int > 0, got 0')
        >>> isinstance(err, ValueError) and isinstance(err, TypeError)
        True
    """

    def __init__(self, argument: str, message: str):
        self.argument = argument
        self.message = message
        super().__init__(f"{argument}: {message}")

    def __reduce__(self):  # picklable (DDP gathers, multiprocessing) despite the two-argument __init__
        return type(self), (self.argument, self.message)
