"""The callback's own exponential moving average of a network's weights (plain PyTorch).

Used when the trainer has no Lightning weight-averaging callback. It is an
:class:`torch.optim.swa_utils.AveragedModel` (so ``state_dict`` and ``.to()`` come for free) with its
own update rule: floats averaged with one foreach lerp, integer buffers (BatchNorm's
``num_batches_tracked``) copied. torch's ``get_ema_multi_avg_fn`` would lerp integers too and returns a
closure, which cannot be pickled (DDP spawn pickles callbacks).

The update runs after every optimizer step, so it is written for that: when the average lives on the
model's device it is two foreach kernels (lerp the floats, copy the integers) on cached tensor lists, with
the update count kept in Python; ``AveragedModel.update_parameters`` walks both module trees (about 0.2 ms
each for a ResNet-18 on a CPU core) and visits every tensor one by one (a ``detach``, a ``.to``, and a copy
for the first update) on every call.
"""
from __future__ import annotations

import weakref
from typing import Any, List, Optional, Sequence, Tuple, Union, cast

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from lightning_ldam import _validation as V
from lightning_ldam._modes import kept_modes
from lightning_ldam.weights.snapshot import snapshot

__all__ = ["EMA", "has_batchnorm", "refresh_batchnorm"]


def ema_step(averaged: List[torch.Tensor], current: List[torch.Tensor], floats: Sequence[int], ints: Sequence[int],
             decay: float) -> None:
    """The EMA rule, in place: ``a ← decay·a + (1 − decay)·c`` for the float tensors (positions ``floats``), a copy
    for the integer ones (``ints``: BatchNorm's batch counts)."""
    if floats:
        torch._foreach_lerp_([averaged[i] for i in floats], [current[i] for i in floats], 1.0 - decay)
    if ints:
        torch._foreach_copy_([averaged[i] for i in ints], [current[i] for i in ints])


def _positions(tensors) -> Tuple[List[int], List[int]]:
    """``(float positions, integer positions)`` in ``tensors``: :func:`ema_step` averages the first, copies the rest."""
    return ([i for i, a in enumerate(tensors) if a.is_floating_point()],
            [i for i, a in enumerate(tensors) if not a.is_floating_point()])


class _EMAUpdate:
    """``multi_avg_fn`` for AveragedModel: :func:`ema_step`; picklable."""

    def __init__(self, decay: float):
        self.decay = decay

    def __call__(self, averaged, current, num_averaged) -> None:
        ema_step(list(averaged), list(current), *_positions(averaged), self.decay)


class EMA(nn.Module):
    """EMA of ``model``'s parameters and buffers, updated every ``every_n_steps`` optimizer steps.

    Args:
        model: the network to follow (deep-copied once; the copy never trains).
        decay: weight of the old average, in [0, 1).
        every_n_steps: update on optimizer steps that are multiples of this.
        device: keep the average here (e.g. ``"cpu"`` to save GPU memory); default: the model's device.

    Example::

        >>> net = nn.Linear(2, 1)
        >>> ema = EMA(net, decay=0.5)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1.0)
        >>> ema.update(net, step=1)
        True
        >>> int(ema.n_averaged)
        1
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, every_n_steps: int = 1,
                 device: Optional[Union[str, torch.device]] = None):
        super().__init__()
        self.decay = V.check_decay("ema_decay", decay)
        V.check_positive("ema_every_n_steps", every_n_steps, integer=True)
        self.every_n_steps = every_n_steps
        # AveragedModel deep-copies what it gets; hand it a stub and put in a snapshot, which copies only
        # modules, parameters and buffers (not datasets or non-leaf tensors users keep on their modules).
        self.average = AveragedModel(nn.Identity(), multi_avg_fn=_EMAUpdate(self.decay), use_buffers=True)
        self.average.module = snapshot(model, device)
        if device is not None:
            self.average.to(device)
        self._updates: Optional[int] = None  # Python mirror of n_averaged (read once, never synced again)
        # the average's tensors: (all, float positions, int positions), split once
        self._average_lists: Optional[Tuple[List[torch.Tensor], List[int], List[int]]] = None
        # (weakref to the model, its modules, the tensor layout last checked)
        self._model_cache: Optional[Tuple[weakref.ReferenceType[nn.Module], List[nn.Module],
                                          Optional[List[Tuple[int, int]]]]] = None

    @property
    def n_averaged(self) -> torch.Tensor:
        """How many updates went into the average (0: none yet, the average is the initial copy)."""
        return self.average.n_averaged

    @property
    def module(self) -> nn.Module:
        """The averaged network."""
        return self.average.module

    def should_update(self, step: int) -> bool:
        return step > 0 and step % self.every_n_steps == 0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> bool:
        """Fold ``model``'s current weights in if ``step`` is due; returns whether it updated."""
        if not self.should_update(step):
            return False
        if self._updates is None:
            self._updates = int(self.average.n_averaged)
        if self._model_cache is None or self._model_cache[0]() is not model:
            self._model_cache = (weakref.ref(model), list(model.modules()), None)
        ref, modules, checked = self._model_cache
        current = _tensors_of(modules)  # in-place under no_grad: no detach
        # Same objects at the same addresses as last checked: same devices, dtypes and shapes (a moved or
        # recast parameter keeps its object but gets new storage; a moved buffer is a new object).
        layout = [(id(t), t.data_ptr()) for t in current]
        if layout != checked:
            averaged = self._split_average()[0]
            if len(averaged) != len(current) or any(a.device != c.device or a.dtype != c.dtype or a.shape != c.shape
                                                    for a, c in zip(averaged, current)):
                self.average.update_parameters(model)  # another device (ema_device) or layout: the general path
                self._updates += 1
                return True
            self._model_cache = (ref, modules, layout)
        averaged, floats, ints = self._split_average()
        if self._updates == 0:
            torch._foreach_copy_(averaged, current)  # AveragedModel's rule: the first update copies
        else:
            ema_step(averaged, current, floats, ints, self.decay)
        self.average.n_averaged.add_(1)
        self._updates += 1
        return True

    def _split_average(self):
        """``(tensors, float positions, integer positions)`` of the average, built once."""
        if self._average_lists is None:
            averaged = _tensors_of(list(self.module.modules()))
            self._average_lists = (averaged, *_positions(averaged))
        return self._average_lists

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        self._updates = None  # the loaded count is read at the next update
        self._average_lists = self._model_cache = None  # assign=True replaces the tensors
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _apply(self, fn, recurse: bool = True):
        self._average_lists = self._model_cache = None  # .to()/.half() give the average new tensors
        return super()._apply(fn, recurse)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_average_lists"] = state["_model_cache"] = None  # weakrefs do not pickle; rebuilt on use
        return state


def _tensors_of(modules: Sequence[nn.Module]) -> List[torch.Tensor]:
    """``[*parameters(), *buffers()]`` of a module tree given as ``list(tree.modules())``: each tensor once,
    in the same order, without walking the tree again (that walk is most of an update's host time)."""
    seen, out = set(), []
    for attr in ("_parameters", "_buffers"):
        for m in modules:
            for t in getattr(m, attr).values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
    return out


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


def refresh_batchnorm(model: nn.Module, inputs: torch.Tensor, batch_size: int = 64,
                      normalize: Optional[Tuple[Any, Any]] = None) -> None:
    """Recompute ``model``'s BatchNorm running statistics from ``inputs`` (in place; for a frozen copy).

    An average of weights comes with no matching BatchNorm statistics when only parameters were
    averaged (Lightning's ``StochasticWeightAveraging``, ``AveragedModel(use_buffers=False)``): its buffers
    are those of the copy's creation. This is ``torch.optim.swa_utils.update_bn`` on ``inputs`` (a cumulative
    average over one pass), without touching the global RNG (Dropout runs in train mode meanwhile) and
    usable under a caller's ``no_grad``/``inference_mode``. Modes and momenta are restored.

    Args:
        model: the network whose BatchNorm buffers are recomputed.
        inputs: pixel-space inputs ``[N, C, ...]`` on any device and of any dtype; each batch is moved to the
            model's device and cast to its floating dtype (a bf16 model gets bf16 inputs).
        batch_size: inputs per forward pass.
        normalize: ``(mean, std)``, each a float or one value per channel: the network sees
            ``(x - mean) / std``, as in training, so the statistics are those of the normalised inputs.

    Raises:
        LDAMArgumentError: a ``batch_size`` that is not an int > 0, or a malformed ``normalize``.

    Example::

        >>> net = nn.Sequential(nn.BatchNorm2d(1))
        >>> refresh_batchnorm(net, torch.full((4, 1, 2, 2), 0.75), normalize=(0.5, 0.25))
        >>> net[0].running_mean
        tensor([1.])
    """
    V.check_positive("batch_size", batch_size, integer=True)
    norm: Optional[Tuple[torch.Tensor, ...]] = None
    if normalize is not None:
        mean, std = cast(Tuple[torch.Tensor, torch.Tensor],  # not None: normalize is given
                         V.check_normalize(normalize, inputs.shape[1] if inputs.dim() > 1 else 1))
        view = (1, -1) + (1,) * (inputs.dim() - 2) if inputs.dim() > 1 else (-1,)  # channels on dim 1
        norm = (mean.view(view), std.view(view))
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or inputs.shape[0] == 0:
        return
    momenta = [(m, m.momentum) for m in bns]
    device = next((t.device for t in model.state_dict().values()), inputs.device)
    dtype = V.model_dtype(model)
    work = torch.promote_types(dtype, torch.float32)  # normalise in float32 at least, then cast
    if norm is not None:
        norm = tuple(t.to(device) for t in norm)
    try:
        with kept_modes(model), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                torch.inference_mode(False), torch.no_grad():
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative moving average: every batch weighs the same
            model.train()
            for start in range(0, inputs.shape[0], batch_size):
                x = inputs[start:start + batch_size].to(device, work)
                if norm is not None:
                    x = (x - norm[0]) / norm[1]
                model(x.to(dtype))
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
