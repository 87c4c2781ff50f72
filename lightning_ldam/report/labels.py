"""Unit labels and layer aliases: how a sampled unit is named in image captions and TensorBoard tags."""
from __future__ import annotations

from typing import Any, Callable, Optional

from lightning_ldam import _validation as V
from lightning_ldam.errors import LDAMArgumentError

__all__ = ["labeller_of", "check_labels"]


def labeller_of(labels: Any) -> Optional[Callable[[str, int], Optional[str]]]:
    """A ``labels`` argument (``None``, a callable, ``{layer: [names]}``) as ``(layer, index) -> label or None``."""
    if labels is None or callable(labels):
        return labels

    def lookup(layer: str, index: int) -> Optional[str]:
        names = labels.get(layer)
        return str(names[index]) if names is not None and 0 <= index < len(names) else None

    return lookup


def check_labels(labels: Any, aliases: Any) -> None:
    """``labels`` and ``layer_aliases`` as the callback takes them (errors name the argument)."""
    if labels is not None and not callable(labels):
        ok = isinstance(labels, dict) and all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)
            for k, v in labels.items())
        if not ok:
            raise LDAMArgumentError("labels", f"expected a dict {{layer path: [name of unit 0, name of unit 1, ...]}} "
                                              f"or a callable (layer, index) -> str, got {V.shown(labels)}")
    if aliases is not None:
        ok = isinstance(aliases, dict) and all(isinstance(k, str) and isinstance(v, str) and v and "/" not in v
                                               for k, v in aliases.items())
        if not ok or len(set(aliases.values())) != len(aliases):
            raise LDAMArgumentError("layer_aliases", f"expected a dict {{layer path: distinct tag name without '/'}}, "
                                                     f"got {V.shown(aliases)}")
