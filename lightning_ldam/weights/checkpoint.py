"""Read weights and LDAM state out of Lightning checkpoints (plain dicts; no Lightning import).

Layouts understood (checked against lightning 2.6):

* plain: ``ckpt["state_dict"]`` holds the LightningModule's weights;
* ``LDAMCallback`` (or a subclass): its state at ``ckpt["callbacks"][<its state key>]``, marked
  ``"format": "lightning_ldam"``, holds its settings, an own EMA
  (``average.module.<name>`` keys, relative to the network the callback ran), the discriminators and the
  reservoir of real inputs;
* Lightning's ``WeightAveraging``/``EMAWeightAveraging``: ``ckpt["state_dict"]`` holds the *averaged*
  weights, ``ckpt["current_model_state"]`` the raw ones, ``ckpt["averaging_state"]["n_averaged"]`` the count;
* Lightning's ``StochasticWeightAveraging``: ``ckpt["state_dict"]`` raw; the averaged LightningModule in its
  callback state's ``average_model_state`` with the count in ``n_averaged``.

Lightning's averagers copy the averaged weights into the model when ``fit`` ends, so a checkpoint saved
*after* ``fit`` (``trainer.save_checkpoint`` at the end) holds them as "raw" too; checkpoints that
``ModelCheckpoint`` saves during training keep the two apart.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, cast

import torch

from lightning_ldam.weights.lightning_averagers import averager_kind

__all__ = ["load_checkpoint", "weight_variants", "params_only_variants", "ldam_state", "ldam_settings", "real_inputs",
           "STATE_FORMAT"]

#: The ``"format"`` entry of ``LDAMCallback``'s checkpoint state: how a state it wrote is recognised.
STATE_FORMAT = "lightning_ldam"
_EMA_PREFIX = "average.module."


def load_checkpoint(path: str) -> Dict[str, Any]:
    """Load a Lightning checkpoint onto the CPU.

    Args:
        path: the ``.ckpt`` file.

    Returns:
        The checkpoint dict (it holds at least ``"state_dict"``).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a ``torch.save``d dict with a ``"state_dict"``.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    try:
        # weights_only=False: Lightning checkpoints hold callback states and hyper-parameters (trusted files).
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises many kinds (UnpicklingError, RuntimeError, EOFError, ...)
        raise ValueError(f"checkpoint {path!r} is not a PyTorch checkpoint: {type(err).__name__}: {err}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), Mapping):
        got = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path!r} is not a Lightning checkpoint: expected a dict with a 'state_dict', "
                         f"got {got}")
    return ckpt


def _ldam_entry(ckpt: Mapping[str, Any]) -> Optional[Tuple[str, Mapping[str, Any]]]:
    """The first callback state an ``LDAMCallback`` (or a subclass: any state key) wrote: its state says
    ``"format": "lightning_ldam"``."""
    states = [(k, v) for k, v in (ckpt.get("callbacks") or {}).items() if isinstance(k, str) and isinstance(v, Mapping)]
    return next(((key, state) for key, state in states if state.get("format") == STATE_FORMAT), None)


def ldam_state(ckpt: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The ``LDAMCallback`` state saved in ``ckpt`` (``None`` if there is none).

    With several ``LDAMCallback`` instances in one trainer the first one (in the checkpoint's order, which is
    the trainer's callback order) is returned.
    """
    entry = _ldam_entry(ckpt)
    return None if entry is None else entry[1]


def ldam_settings(ckpt: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings the (first) ``LDAMCallback`` ran with: ``neurons``, ``module``, ``seed``, ``value_range``, ...

    From its state's ``"settings"`` dict; ``neurons`` comes back as a spec
    :func:`~lightning_ldam.sampling.targets.parse_neurons` takes. Empty when there is no callback state.
    """
    entry = _ldam_entry(ckpt)
    if entry is None:
        return {}
    key, state = entry
    if not isinstance(state.get("settings"), Mapping):
        raise ValueError(f"the LDAMCallback state {key!r} has no 'settings' dict: it was not written by this "
                         f"version of lightning_ldam")
    settings = dict(state["settings"])
    if isinstance(settings.get("neurons"), list):  # the settings dict stores (layer, index) tuples as lists
        settings["neurons"] = [tuple(n) if isinstance(n, list) and len(n) == 2 and isinstance(n[0], str) else n
                               for n in settings["neurons"]]
    return settings


def real_inputs(ckpt: Mapping[str, Any]) -> Optional[torch.Tensor]:
    """The real training inputs ``[N, C, H, W]`` (pixel space) in the ``LDAMCallback`` reservoir, or ``None``."""
    state = ldam_state(ckpt)
    data = ((state or {}).get("reservoir") or {}).get("data")
    return data if isinstance(data, torch.Tensor) and data.shape[0] > 0 else None


def _count(value) -> int:
    return int(value.item() if isinstance(value, torch.Tensor) else (value or 0))


def _ema_prefix(ema: Mapping[str, torch.Tensor], raw: Mapping[str, torch.Tensor], declared: Optional[str]) -> str:
    """Prefix that turns the EMA's keys (relative to the network the callback ran) into LightningModule keys.

    Candidates: the callback's ``module`` (read from its state key), the LightningModule itself, then every
    prefix under which the first EMA key occurs in ``raw``. A candidate fits when every prefixed key exists in
    ``raw`` with the same shape; the first of the first two that fits wins, else the single inferred one.
    """
    def fits(prefix: str) -> bool:
        return all(prefix + k in raw and tuple(raw[prefix + k].shape) == tuple(v.shape) for k, v in ema.items())

    for prefix in ([declared + "."] if declared else []) + [""]:
        if fits(prefix):
            return prefix
    first = next(iter(ema))
    inferred = sorted({k[: -len(first)] for k in raw if k.endswith("." + first)})
    inferred = [p for p in inferred if fits(p)]
    if len(inferred) == 1:
        return inferred[0]
    if inferred:
        raise ValueError(f"LDAMCallback's EMA fits several submodules ({[p[:-1] for p in inferred]}) and the "
                         f"checkpoint does not say which one the callback ran (module={declared!r})")
    raise ValueError(f"LDAMCallback's EMA weights ({len(ema)} tensors, e.g. {first!r}) match no part of the "
                     f"checkpoint's state_dict (module={declared!r})")


def weight_variants(ckpt: Mapping[str, Any]) -> Dict[str, Dict[str, torch.Tensor]]:
    """LightningModule state dicts by variant: ``"raw"`` and the averaged copies with at least one update.

    * ``"ema"`` from ``LDAMCallback``'s own EMA. If the callback ran a submodule (``module="net"``), its EMA
      covers only that submodule: the keys get the submodule's prefix back (the ``module`` recorded in the
      callback's state key, verified against the raw keys and shapes; inferred from them when the key says
      nothing) and the tensors outside the submodule are the raw ones, so the dict loads strictly.
    * ``"ema"`` (an ``EMAWeightAveraging``, or any averager whose class name contains ``EMA``) or ``"swa"`` (other
      ``WeightAveraging`` subclasses) from Lightning's layout; ``"raw"`` then comes from ``current_model_state``.
      If ``LDAMCallback``'s EMA already took the name, this one is called ``"<name>-lightning"``.
    * ``"swa"`` from ``StochasticWeightAveraging``'s callback state.

    Args:
        ckpt: a checkpoint dict from :func:`load_checkpoint`.

    Raises:
        ValueError: the ``LDAMCallback`` EMA does not fit the checkpoint's weights.
    """
    return {name: state for name, state, _ in _variants(ckpt)}


def params_only_variants(ckpt: Mapping[str, Any]) -> List[str]:
    """The :func:`weight_variants` names that average parameters only (``StochasticWeightAveraging``'s):
    their BatchNorm statistics are those of the averaged copy's creation, to be recomputed before use."""
    return [name for name, _, params_only in _variants(ckpt) if params_only]


def _variants(ckpt: Mapping[str, Any]) -> List[Tuple[str, Dict[str, torch.Tensor], bool]]:
    """``(name, state dict, parameters only)`` per variant, for :func:`weight_variants`."""
    callbacks = {k: v for k, v in (ckpt.get("callbacks") or {}).items() if isinstance(k, str)}
    lightning_avg = "current_model_state" in ckpt
    raw = dict(ckpt["current_model_state"] if lightning_avg else ckpt["state_dict"])
    out: List[Tuple[str, Dict[str, torch.Tensor], bool]] = [("raw", raw, False)]

    def add(name: str, state: Dict[str, torch.Tensor], params_only: bool = False) -> None:
        taken = {n for n, _, _ in out}
        out.append((name if name not in taken else f"{name}-lightning", state, params_only))

    entry = _ldam_entry(ckpt)
    ema_state = entry[1].get("ema") if entry else None
    if ema_state and _count(ema_state.get("average.n_averaged")) > 0:
        ema = {k[len(_EMA_PREFIX):]: v for k, v in ema_state.items() if k.startswith(_EMA_PREFIX)}
        if ema:
            prefix = _ema_prefix(ema, raw, ldam_settings(ckpt).get("module"))
            add("ema", {**raw, **{prefix + k: v for k, v in ema.items()}})

    if lightning_avg and _count((ckpt.get("averaging_state") or {}).get("n_averaged")) > 0:
        kinds = [averager_kind(k) for k in callbacks if averager_kind(k) not in (None, "swa")]
        add(cast(str, kinds[0]) if kinds else "swa", dict(ckpt["state_dict"]))  # None filtered out above

    for key, state in callbacks.items():
        if averager_kind(key) == "swa" and isinstance(state, Mapping):
            avg = state.get("average_model_state")
            if avg and _count(state.get("n_averaged")) > 0:
                add("swa", {k: v for k, v in avg.items() if k in raw}, params_only=True)
    return out
