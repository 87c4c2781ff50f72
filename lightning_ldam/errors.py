"""The one error type of bad arguments: ``LDAMArgumentError`` names the argument it is about.

It subclasses both ``ValueError`` and ``TypeError``, so ``except ValueError`` and ``except TypeError`` keep
catching what they caught before the type existed; ``.argument`` lets the CLI map it to its option names.
"""
from __future__ import annotations

__all__ = ["LDAMArgumentError", "TargetNotReached"]


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


class TargetNotReached(LDAMArgumentError):
    """Target layers the model's forward did not call on the inputs it was given (``.layers``).

    A model whose forward branches on its input (bright inputs take another head) can skip a target on
    noise-started chains and call it on real images: the callback then starts chains from data.
    """

    def __init__(self, layers, message: str = ""):
        self.layers = list(layers)
        super().__init__("neurons", message or f"layers {self.layers} were not called in the model's forward; "
                                               f"choose modules that run in forward (see lightning_ldam.list_targets)")

    def __reduce__(self):
        return type(self), (self.layers, self.message)
