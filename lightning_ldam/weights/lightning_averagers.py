"""Which weight variants a training run has: the raw weights, the callback's own EMA, Lightning's averagers.

Lightning's ``WeightAveraging``/``EMAWeightAveraging`` and ``StochasticWeightAveraging`` expose no public
accessor for their averaged copy or its update count, so this module is the one place that reads their
private attributes (checked against lightning 2.6); :func:`averager_kind` is the one place that names them.
Duck-typed: it serves the ``lightning.pytorch`` and the standalone ``pytorch_lightning`` callbacks alike.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from torch import nn

__all__ = ["averager_kind", "is_averager", "find_variants", "MIN_AVERAGED", "Source"]

#: (network, recompute BatchNorm statistics before sampling, updates or snapshots averaged: 0 for raw)
Source = Tuple[nn.Module, bool, int]
#: An average of fewer snapshots than this is one set of weights, not an average: it is not sampled.
MIN_AVERAGED = 2


def _class_names(obj: Union[str, object]) -> List[str]:
    if isinstance(obj, str):  # a checkpoint's callback state key: "EMAWeightAveraging{...}"
        return [obj.split("{")[0]]
    # By name, not isinstance: the standalone pytorch_lightning package has its own class hierarchy.
    return [c.__name__ for c in type(obj).__mro__]


def _is_ema_fn(fn: Any) -> bool:
    """``torch.optim.swa_utils.get_ema_avg_fn``/``get_ema_multi_avg_fn`` closures are named ``ema_update``."""
    return getattr(fn, "__name__", "") == "ema_update"


def averager_kind(obj: Union[str, object]) -> Optional[str]:
    """The variant name of a Lightning averaging callback (or of its checkpoint state key), else ``None``.

    ``"ema"``: ``EMAWeightAveraging``, or a ``WeightAveraging`` given an EMA ``avg_fn``/``multi_avg_fn``;
    ``"swa"``: ``StochasticWeightAveraging``, or a ``WeightAveraging`` with the default equal-weight average;
    ``"avg"``: a ``WeightAveraging`` with another averaging function. From a state key (no object to inspect),
    a ``WeightAveraging`` subclass counts as ``"ema"`` when its class name says EMA.

    Example::

        >>> averager_kind("EMAWeightAveraging{'decay': 0.99}"), averager_kind("StochasticWeightAveraging{...}")
        ('ema', 'swa')
        >>> averager_kind("ModelCheckpoint{...}") is None
        True
    """
    names = _class_names(obj)
    if "StochasticWeightAveraging" in names:
        return "swa"
    if "EMAWeightAveraging" in names:
        return "ema"
    if not any(n == "WeightAveraging" or n.endswith("WeightAveraging") for n in names):
        return None
    if isinstance(obj, str):
        return "ema" if "EMA" in names[0] else "swa"
    kwargs = getattr(obj, "_kwargs", None) or {}
    fns = [kwargs.get("avg_fn"), kwargs.get("multi_avg_fn")]
    if any(_is_ema_fn(f) for f in fns):
        return "ema"
    return "avg" if any(f is not None for f in fns) else "swa"


def is_averager(cb: object) -> bool:
    """Whether ``cb`` is one of Lightning's averaging callbacks."""
    return averager_kind(cb) is not None


def holds_swa_average(cb: object, trainer: Any) -> bool:
    """Whether ``StochasticWeightAveraging`` has copied its average into the module: on a model with BatchNorm it does
    so when its extra batch-norm epoch starts (epoch ``swa_end + 1``) and the module keeps it from then on, through
    ``on_train_end`` (by which time the trainer has counted that epoch: ``current_epoch`` is ``swa_end + 2``)."""
    if "StochasticWeightAveraging" not in _class_names(cb):
        return False
    max_epochs = getattr(cb, "_max_epochs", -1)
    return bool(getattr(cb, "_model_contains_batch_norm", False)) and max_epochs not in (-1, None) \
        and trainer.current_epoch >= max_epochs  # swa_end + 1 = max_epochs


def _averaged(cb: object) -> Tuple[Optional[nn.Module], int, bool]:
    """``(averaged LightningModule copy or None, update count, buffers averaged too)``.

    ``StochasticWeightAveraging`` keeps a plain copy in ``_average_model`` with the count on the callback and
    averages parameters only; ``WeightAveraging`` keeps an ``AveragedModel`` (``use_buffers`` says for buffers).
    """
    avg = getattr(cb, "_average_model", None)
    if "StochasticWeightAveraging" in _class_names(cb):
        count = getattr(cb, "n_averaged", None)
        return avg, 0 if count is None else int(count), False
    if avg is None:
        return None, 0, True
    return avg.module, int(avg.n_averaged), bool(getattr(avg, "use_buffers", True))


def find_variants(network: Callable[[nn.Module], nn.Module], pl_module: nn.Module, averagers: List[object],
                  own_ema: Optional[Any], trainer: Any, raw_gone: bool,
                  note: Callable[[str, str], None]) -> Dict[str, Source]:
    """What a round would sample, uncopied: ``{name: (network, refresh BatchNorm statistics, count averaged)}``.

    ``raw`` is left out whenever the module holds an average (SWA's batch-norm epoch and after; the fit end after an
    averager that copied its average in); an average of fewer than :data:`MIN_AVERAGED` updates or snapshots is
    left out, with one note.

    Args:
        network: maps a LightningModule (the live one or an averaged copy) to the network LDAM runs.
        pl_module: the live module.
        averagers: Lightning's averaging callbacks in the trainer.
        own_ema: the callback's :class:`~lightning_ldam.weights.ema.EMA`, or ``None``.
        trainer: the trainer (epoch, to spot SWA's batch-norm epoch).
        raw_gone: an averager already copied its average into the module (the fit-end round has no raw).
        note: ``note(key, message)``: an informational message, shown once per key.
    """
    holder = next((cb for cb in averagers if holds_swa_average(cb, trainer)), None)
    if holder is not None:
        note("swa_bn", "LDAMCallback: StochasticWeightAveraging has copied its average into the model (its batch-norm "
                       "epoch and after): rounds from now on log it as 'swa' and have no 'raw'")
        return {"swa": (network(pl_module), False, _averaged(holder)[1])}
    out: Dict[str, Source] = {}
    if raw_gone:
        note("raw_gone", "LDAMCallback: an averaging callback already copied the averaged weights into the model, "
                         "so the fit-end round has no raw weights; list LDAMCallback before it in callbacks=[...] "
                         "to log both")
    else:
        out["raw"] = (network(pl_module), False, 0)
    if own_ema is not None:
        count = int(own_ema.n_averaged)
        if count >= MIN_AVERAGED:
            out["ema"] = (own_ema.module, False, count)
        else:
            note("ema", f"LDAMCallback: the EMA holds {count} update(s), under {MIN_AVERAGED}; it is sampled once it "
                        f"averages {MIN_AVERAGED}")
    for cb in averagers:
        name = averager_kind(cb)
        assert name is not None  # ``averagers`` holds averaging callbacks only
        module, count, buffers = _averaged(cb)
        if module is None or count < MIN_AVERAGED:
            note(name, f"LDAMCallback: {type(cb).__name__}'s average holds {count} snapshot(s) or update(s), under "
                       f"{MIN_AVERAGED} (one set of weights is no average); '{name}' is sampled once it holds "
                       f"{MIN_AVERAGED}")
            continue
        while name in out:
            name += "+"
        # Parameters only averaged: BN statistics of the copy's creation would not match them.
        out[name] = (network(module), not buffers, count)
    return out
