"""The TensorBoard tag layout, in one place: what the callback and the CLI log for a set of variants.

``summarize`` turns ``{variant: SampleResult}`` into image grids and scalars keyed by tag; ``write_tensorboard``
writes them with a ``SummaryWriter``. :data:`TAGS` lists every tag (a documented contract, from which the docs' tag
page is generated; ``{layer}`` is the layer path, or its alias).
"""
from __future__ import annotations

import math
import re
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple, cast

import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report.metrics import (
    EXPLODING_FACTOR,
    UNDRIVEN_LIFT,
    divergence,
    health,
    lift,
    nearest_real,
    transfer,
)
from lightning_ldam.report.realism import MIN_IMAGES, measurable, realism
from lightning_ldam.report.render import CARD_WIDTH, MIN_FIT_CHAINS, compare_grid, neuron_grid
from lightning_ldam.sampling.result import SampleResult, mean_pairwise_distance, reference
from lightning_ldam.sampling.state import PROJECTIONS

__all__ = ["summarize", "write_tensorboard", "unhealthy_units", "unmixed_layers", "metrics_table", "Labeller",
           "RHAT_BOUND", "Tag", "TAGS", "known_tag"]


class Tag(NamedTuple):
    """One tag of the layout: its pattern (``{variant}``, ``{layer}``, ``{kind}`` stand for a name), what it is
    (``image``, ``scalar`` or ``text``) and what it shows."""

    pattern: str
    kind: str
    shows: str


_PER_LAYER = "ldam/{variant}/{layer}"
#: Split R-hat above which a neuron's chains count as not mixed (Stan warns from 1.01; 1.1 is the customary bound).
RHAT_BOUND = 1.1
#: Every tag the callback and ``lightning-ldam compare`` write.
TAGS: Tuple[Tag, ...] = (
    Tag(_PER_LAYER, "image",
        "one row per neuron of that layer, one column per chain; variant: raw, ema, swa (avg: another average)"),
    Tag("ldam/compare/{layer}", "image",
        "per neuron a group of lines, one per variant (raw first): its first chains (the same starts and noise in "
        "every line, so the columns pair up), its mean over all chains, |its mean - raw's mean| (white: half the "
        "value range) and, with real inputs, the neuron's transfer with raw as a number on each averaged line (-: "
        "the unit is undriven); a header band names the columns, the left margin the neuron (labels=). At most "
        f"{CARD_WIDTH} px wide (TensorBoard's card): a wider sheet shows fewer chains, down to {MIN_FIT_CHAINS}, then "
        "smaller tiles"),
    Tag(_PER_LAYER + "/activation", "scalar", "mean final activation of the layer's neurons"),
    Tag(_PER_LAYER + "/lift", "scalar",
        "median over the layer's neurons of (the samples' mean activation - the real mean) / (the real max - the "
        "real mean), on the reservoir's real inputs read through this variant's weights: 1 = as strong as the best "
        "real input, 0 = an average one"),
    Tag(_PER_LAYER + "/realism", "scalar",
        "how real the samples look as texture and structure: the Frechet distance of their texture features to "
        "half the reservoir over that of reservoir images from the other half, square-rooted (about 1: as real as "
        "real images; blur, class means and noise read well above 1). Images only "
        f"(>= {MIN_IMAGES} samples, >= {2 * MIN_IMAGES} real inputs)"),
    Tag(_PER_LAYER + "/nearest_real", "scalar",
        "pixel space: the mean L2 distance from each sample to its nearest reservoir image over the same among "
        "reservoir images (about 1: as close, 0: copies). It rewards flat averages: read it as how far from the "
        "data's pixels, not as realism"),
    Tag(_PER_LAYER + "/diversity", "scalar",
        "the mean pairwise L2 distance between a neuron's chains over the same among reservoir images (without "
        "real inputs: the distance itself); not logged with one chain"),
    Tag(_PER_LAYER + "/disc_score", "scalar",
        "mean D(x) of the samples under the variant's own discriminator (with one); about 0.5 once D is at "
        "equilibrium, so it says little across variants"),
    Tag(_PER_LAYER + "/acceptance", "scalar", "mala's (hmc's: per transition) acceptance rate after burn-in"),
    Tag(_PER_LAYER + "/rhat", "scalar",
        "median over the layer's neurons of the rank-normalised split R-hat over the sampling phase, the worst of "
        f"the activation's and of {PROJECTIONS} fixed random projections of the image: about 1 mixed, above "
        f"{RHAT_BOUND:g} not (a layer with a neuron above {RHAT_BOUND:g} gets one warning per fit)"),
    Tag(_PER_LAYER + "/ess", "scalar",
        "median over the layer's neurons of the bulk effective sample size of the same quantities (all of a "
        "neuron's chains together)"),
    Tag("ldam/{variant}/averaged", "scalar",
        "per averaged variant: the updates (EMA) or snapshots (SWA) its average holds; sampled from 2 on"),
    Tag("ldam/divergence/{variant}/{layer}", "scalar",
        "per averaged variant: the mean L2 distance between a neuron's raw and averaged samples, chain by chain (the "
        "same starts and noise), over the chains' own mean pairwise distance; mean over the layer's neurons. 0: the "
        "same samples, about 1: as different as two chains. Once the pairing is lost it reads about 1 or more "
        "whatever the concept: transfer tells concepts apart better"),
    Tag("ldam/transfer/{variant}/{layer}", "scalar",
        "per averaged variant: how strongly each one's unit responds to the other's samples relative to its own "
        "(lift on the other's / lift on its own, both ways averaged), median over the layer's driven neurons. 1: "
        "the units respond to each other's samples as to their own (the same concept), 0: no more than to an "
        "average real input"),
    Tag("ldam/drift/{variant}/{layer}", "scalar",
        "the divergence measure between this round's and the previous round's samples of one variant (from a "
        "fit's second round on); with persistent chains, how far a chain moved in one round (re-drawn chains read "
        "about 1 or more)"),
    Tag("ldam/retention/{variant}/{layer}", "scalar",
        "the transfer ratio of this round's unit on the previous round's samples of the variant: does the unit, as "
        "trained now, still respond to what it responded to? (from a fit's second round on; not under DDP)"),
    Tag("ldam/health/{layer}/{kind}", "scalar",
        "raw weights: dead (constant over the reservoir's real inputs), undriven (live, but the samples reach a "
        f"lift under {UNDRIVEN_LIFT:g}) or saturated (NaN/Inf activations, or samples beyond {EXPLODING_FACTOR:g} x "
        "the real range) neurons"),
    Tag("ldam/nonfinite_resets", "scalar", "chains restarted after NaN/Inf this round"),
    Tag("ldam/failed_rounds", "scalar", "rounds that failed so far (each also a warning naming the cause)"),
    Tag("ldam/skipped_rounds", "scalar",
        "rounds skipped so far to stay under max_overhead (absent with max_overhead=None)"),
    Tag("ldam/skipped_batches", "scalar",
        "training batches not kept for LDAM so far (unreadable, or of another per-sample shape than the "
        "reservoir's)"),
    Tag("ldam/nonfinite_inputs", "scalar", "training input rows skipped so far because they held NaN/Inf"),
    Tag("ldam/settings", "text",
        "once per fit, at its first round: the variants and the resolved sampler settings as a table"),
)
_TAG_RES = [re.compile("^" + re.escape(t.pattern).replace(r"\{layer\}", "[^/]+").replace(r"\{variant\}", "[^/]+")
                       .replace(r"\{kind\}", "(dead|undriven|saturated)") + "$") for t in TAGS]


def known_tag(tag: str) -> bool:
    """Whether ``tag`` is one of :data:`TAGS` (a layer path may hold dots, an alias no slash).

    Example::

        >>> known_tag("ldam/ema/net.fc/lift"), known_tag("ldam/compare/net.fc"), known_tag("ldam/ema/net.fc/speed")
        (True, True, False)
    """
    return any(r.match(tag) for r in _TAG_RES)

#: ``(layer path, index) -> row label`` (or ``None`` for the default ``"index"``).
Labeller = Callable[[str, int], Optional[str]]
#: Real images the realism and diversity scales are measured on (pairwise distances: quadratic in this).
_MAX_REAL = 256


def summarize(results: Mapping[str, SampleResult], upscale: Optional[int] = None, *,
              real: Optional[torch.Tensor] = None, previous: Optional[Mapping[str, torch.Tensor]] = None,
              labels: Optional[Labeller] = None,
              aliases: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, torch.Tensor], Dict[str, float]]:
    """Image grids ``[3, H, W]`` and scalars, keyed by tag, for results that share neurons and seeds.

    Args:
        results: ``{variant: result}``, e.g. ``{"raw": ..., "ema": ...}``; all for the same neurons.
        upscale: nearest-neighbour factor for the grids (default: tiles at least 56 px high).
        real: real inputs in pixel space (the callback's reservoir): ``realism`` and ``diversity`` are measured
            against them (without: ``diversity`` is the chains' mean pairwise L2 distance and no ``realism``).
        previous: ``{variant: images}`` of the previous round (``SampleResult.images``), for ``drift``.
        labels: row labels of the grids.
        aliases: ``{layer path: name}`` used in the tags instead of the path.
    """
    if not results:
        raise LDAMArgumentError("results", "expected at least one variant, got none")
    first = next(iter(results.values()))
    for variant, res in results.items():
        if res.neurons != first.neurons:
            raise LDAMArgumentError("results", f"variant {variant!r} sampled other neurons than the first variant")
    layers = list(dict.fromkeys(layer for layer, _ in first.neurons))
    names = {layer: (aliases or {}).get(layer, layer) for layer in layers}
    real = None if real is None or real.shape[0] < 2 else real[:_MAX_REAL].float()
    real_spread = float(mean_pairwise_distance(real.flatten(1))) if real is not None else None
    images: Dict[str, torch.Tensor] = {}
    scalars: Dict[str, float] = {}
    for layer in layers:
        rows = first.layer_slice(layer)
        row_labels = _row_labels(first, rows, labels)
        for variant, res in results.items():
            images[f"ldam/{variant}/{names[layer]}"] = neuron_grid(res.images[rows], res.value_range, upscale,
                                                                   row_labels=row_labels)
            scalars.update(_variant_scalars(f"ldam/{variant}/{names[layer]}", res, rows, real, real_spread))
        if len(results) > 1:
            images[f"ldam/compare/{names[layer]}"] = compare_grid(
                [r.images[rows] for r in results.values()], first.value_range, upscale, names=list(results),
                row_labels=row_labels, scores=_transfer_scores(results, rows))
        scalars.update(_pair_scalars(results, previous, rows, names[layer]))
        scalars.update(_health_scalars(results, rows, names[layer]))
    scalars["ldam/nonfinite_resets"] = float(sum(int(r.nonfinite_resets.sum()) for r in results.values()))
    return images, scalars


def _row_labels(res: SampleResult, rows: List[int], labels: Optional[Labeller]) -> Optional[List[str]]:
    if labels is None:
        return None
    out = []
    for i in rows:
        layer, index = res.neurons[i]
        name = labels(layer, index)
        out.append(f"{index}: {name}" if name else str(index))
    return out


def _variant_scalars(prefix: str, res: SampleResult, rows: List[int], real: Optional[torch.Tensor],
                     real_spread: Optional[float]) -> Dict[str, float]:
    out = {f"{prefix}/activation": res.activations[rows].mean().item()}
    if res.activations.shape[1] > 1:  # one chain has no spread to measure: left out, never logged as 0
        spread = res.diversity[rows].mean().item()
        out[f"{prefix}/diversity"] = spread / real_spread if real_spread else spread
    if real is not None:
        samples = res.images[rows].flatten(0, 1)
        out[f"{prefix}/nearest_real"] = nearest_real(samples, real)
        if measurable(samples, real):
            value = realism(samples, real)
            if not math.isnan(value):
                out[f"{prefix}/realism"] = value
    if res.real_activations is not None:
        lifts = lift(res.activations[rows], res.real_activations[:, rows])
        if not bool(torch.isnan(lifts).all()):
            out[f"{prefix}/lift"] = float(torch.nanmedian(lifts))
    if res.disc_scores is not None:
        out[f"{prefix}/disc_score"] = res.disc_scores[rows].mean().item()
    if res.acceptance_rate is not None:
        out[f"{prefix}/acceptance"] = res.acceptance_rate[rows].mean().item()
    if res.rhat is not None:
        assert res.ess is not None  # measured with R-hat
        out[f"{prefix}/rhat"] = float(res.rhat[rows].median())
        out[f"{prefix}/ess"] = float(res.ess[rows].median())
    return out


def unmixed_layers(results: Mapping[str, SampleResult]) -> Dict[str, Tuple[int, int, float, float]]:
    """Per layer whose chains did not mix in some variant, ``(neurons over RHAT_BOUND, neurons, median R-hat,
    median bulk ESS)`` of the variant with most such neurons: what the callback warns about once per layer."""
    out: Dict[str, Tuple[int, int, float, float]] = {}
    for res in results.values():
        if res.rhat is None:
            continue
        for layer in dict.fromkeys(layer for layer, _ in res.neurons):
            rows = res.layer_slice(layer)
            rhat = res.rhat[rows]
            bad = int((~(rhat <= RHAT_BOUND)).sum())  # NaN counts as not mixed
            if bad and bad > out.get(layer, (0,))[0]:
                assert res.ess is not None  # measured with R-hat
                out[layer] = (bad, len(rows), float(rhat.median()), float(res.ess[rows].median()))
    return out


def _nanmean(x: torch.Tensor) -> Optional[float]:
    value = float(torch.nanmean(x)) if x.numel() else math.nan
    return None if math.isnan(value) else value


def _pair_scalars(results: Mapping[str, SampleResult], previous: Optional[Mapping[str, torch.Tensor]],
                  rows: List[int], layer: str) -> Dict[str, float]:
    """``divergence`` and ``transfer`` of each averaged variant from raw, ``drift`` and ``retention`` of each variant
    from its previous round."""
    out: Dict[str, float] = {}
    ref = reference(results)
    raw = results.get(cast(str, ref)) if len(results) > 1 else None  # a reference among two or more
    for variant, res in results.items():
        if raw is not None and variant != ref:
            _put(out, f"ldam/divergence/{variant}/{layer}", _nanmean(divergence(raw.images[rows], res.images[rows])))
            both = _both_ways(results, variant, rows)
            if both is not None:
                _put(out, f"ldam/transfer/{variant}/{layer}", _nanmedian(both))
        before = (previous or {}).get(variant)
        if before is not None and tuple(before.shape) == tuple(res.images.shape):
            _put(out, f"ldam/drift/{variant}/{layer}", _nanmean(divergence(before[rows], res.images[rows])))
        retained = _transfer(res, "previous", rows)
        if retained is not None:
            _put(out, f"ldam/retention/{variant}/{layer}", _nanmedian(retained))
    return out


def _both_ways(results: Mapping[str, SampleResult], variant: str, rows: List[int]) -> Optional[torch.Tensor]:
    """``[len(rows)]`` per-neuron transfer of ``variant`` with raw, both ways averaged (``None``: not measured)."""
    ref = reference(results)
    assert ref is not None  # ``variant`` is one of the results
    both = [_transfer(results[variant], ref, rows), _transfer(results[ref], variant, rows)]
    return None if any(t is None for t in both) else (cast(torch.Tensor, both[0]) + cast(torch.Tensor, both[1])) / 2


def _transfer_scores(results: Mapping[str, SampleResult], rows: List[int]) -> Optional[List[List[Optional[float]]]]:
    """The compare sheet's last column: per neuron, nothing on raw's line and each other variant's transfer with
    raw on its own; ``None`` (no column) without raw or without the reads across."""
    ref = reference(results)
    if len(results) < 2:
        return None
    per_variant = {v: _both_ways(results, v, rows) for v in results if v != ref}
    if any(t is None for t in per_variant.values()):
        return None
    return [[None if v == ref else float(cast(torch.Tensor, per_variant[v])[i]) for v in results]
            for i in range(len(rows))]


def _transfer(res: SampleResult, source: str, rows: List[int]) -> Optional[torch.Tensor]:
    """``[len(rows)]`` transfer of ``res``'s units from the chains of ``source``, or ``None`` if not measured."""
    cross = res.cross_activations.get(source)
    if cross is None or res.real_activations is None:
        return None
    return transfer(res.activations[rows], cross[rows], res.real_activations[:, rows])


def _nanmedian(x: torch.Tensor) -> Optional[float]:
    value = float(torch.nanmedian(x)) if x.numel() else math.nan
    return None if math.isnan(value) else value


def _put(out: Dict[str, float], tag: str, value: Optional[float]) -> None:
    if value is not None:
        out[tag] = value


def _health_scalars(results: Mapping[str, SampleResult], rows: List[int], layer: str) -> Dict[str, float]:
    found = unhealthy_units(results, rows)
    return {} if found is None else {f"ldam/health/{layer}/{kind}": float(len(units)) for kind, units in found.items()}


def unhealthy_units(results: Mapping[str, SampleResult], rows: Optional[List[int]] = None
                    ) -> Optional[Dict[str, List[Tuple[str, int]]]]:
    """Dead, undriven and saturated neurons of the raw weights (the first variant without ``raw``), as
    ``{kind: [(layer, index)]}``; ``None`` without real activations to measure them on."""
    res = results.get("raw") or next(iter(results.values()))
    if res.real_activations is None:
        return None
    rows = list(range(len(res.neurons))) if rows is None else rows
    found = health(res.real_activations[:, rows], res.activations[rows])
    return {kind: [res.neurons[rows[i]] for i in positions] for kind, positions in found.items()}


#: Columns of :func:`metrics_table` after ``layer`` and ``variant``.
TABLE_COLUMNS = ("lift", "realism", "rhat", "ess", "diversity", "divergence", "transfer", "drift", "retention",
                 "activation", "disc_score", "dead", "undriven", "saturated")


def metrics_table(scalars: Mapping[str, float], reference: str = "raw") -> List[Dict[str, object]]:
    """:func:`summarize`'s scalars as rows ``{"layer", "variant", *TABLE_COLUMNS}`` (one per layer and variant;
    ``divergence`` is from raw, the health counts are the raw weights' and sit on the raw row; missing: ``None``)."""
    rows: Dict[Tuple[str, str], Dict[str, object]] = {}

    def row(layer: str, variant: str) -> Dict[str, object]:
        return rows.setdefault((layer, variant), {"layer": layer, "variant": variant,
                                                  **{c: None for c in TABLE_COLUMNS}})

    for tag, value in scalars.items():
        parts = tag.split("/")
        if len(parts) != 4 or parts[0] != "ldam":
            continue
        if parts[1] in ("divergence", "transfer", "drift", "retention"):
            row(parts[3], parts[2])[parts[1]] = value
        elif parts[1] == "health":
            row(parts[2], reference)[parts[3]] = value
        elif parts[3] in TABLE_COLUMNS:
            row(parts[2], parts[1])[parts[3]] = value
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0], k[1] != reference, k[1]))]


def write_tensorboard(writer, images: Mapping[str, torch.Tensor], scalars: Mapping[str, float], step: int) -> None:
    """Write ``summarize``'s output with a ``torch.utils.tensorboard.SummaryWriter`` at ``step``."""
    for tag, value in scalars.items():  # scalars first: a failed image write never costs them
        writer.add_scalar(tag, value, global_step=step)
    for tag, img in images.items():
        writer.add_image(tag, img, global_step=step)
    writer.flush()
