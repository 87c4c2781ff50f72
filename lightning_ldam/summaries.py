"""The TensorBoard tag layout, in one place: what the callback and the CLI log for a set of variants.

``summarize`` turns ``{variant: SampleResult}`` into image grids and scalars keyed by tag;
``write_tensorboard`` writes them with a ``SummaryWriter``. Tags (a documented contract):

* images ``ldam/{variant}/{layer}``: one row per neuron, one column per chain;
* images ``ldam/compare/{layer}``: per neuron, the variants' chains side by side (+ mean and std maps);
* scalars ``ldam/{variant}/{layer}/activation``, ``.../diversity``, ``.../realism`` (D score, when a
  discriminator was used), ``.../acceptance`` (MALA's acceptance rate, ``method="mala"``) and
  ``ldam/nonfinite_resets``.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.render import compare_grid, neuron_grid
from lightning_ldam.result import SampleResult

__all__ = ["summarize", "write_tensorboard"]


def summarize(results: Mapping[str, SampleResult],
              upscale: Optional[int] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """Image grids ``[3, H, W]`` and scalars, keyed by tag, for results that share neurons and seeds.

    Args:
        results: ``{variant: result}``, e.g. ``{"raw": ..., "ema": ...}``; all for the same neurons.
        upscale: nearest-neighbour factor for the grids (default: tiles at least 56 px high).
    """
    if not results:
        raise LDAMArgumentError("results", "expected at least one variant, got none")
    first = next(iter(results.values()))
    layers = list(dict.fromkeys(layer for layer, _ in first.neurons))
    images: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, float] = {}
    resets = 0
    for variant, res in results.items():
        if res.neurons != first.neurons:
            raise LDAMArgumentError("results", f"variant {variant!r} sampled other neurons than the first variant")
        resets += int(res.nonfinite_resets.sum())
        for layer in layers:
            rows = res.layer_slice(layer)
            images[f"ldam/{variant}/{layer}"] = neuron_grid(res.images[rows], res.value_range, upscale)
            scalars[f"ldam/{variant}/{layer}/activation"] = res.activations[rows].mean().item()
            scalars[f"ldam/{variant}/{layer}/diversity"] = res.diversity[rows].mean().item()
            if res.disc_scores is not None:
                scalars[f"ldam/{variant}/{layer}/realism"] = res.disc_scores[rows].mean().item()
            if res.acceptance_rate is not None:
                scalars[f"ldam/{variant}/{layer}/acceptance"] = res.acceptance_rate[rows].mean().item()
    if len(results) > 1:
        for layer in layers:
            rows = first.layer_slice(layer)
            images[f"ldam/compare/{layer}"] = compare_grid([r.images[rows] for r in results.values()],
                                                           first.value_range, upscale)
    scalars["ldam/nonfinite_resets"] = float(resets)
    return images, scalars


def write_tensorboard(writer, images: Mapping[str, torch.Tensor], scalars: Mapping[str, float], step: int) -> None:
    """Write ``summarize``'s output with a ``torch.utils.tensorboard.SummaryWriter`` at ``step``."""
    for tag, img in images.items():
        writer.add_image(tag, img, global_step=step)
    for tag, value in scalars.items():
        writer.add_scalar(tag, value, global_step=step)
    writer.flush()
