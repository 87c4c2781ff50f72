"""What one LDAM call returns: samples per neuron plus the figures that describe them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from lightning_ldam.sampling.config import SamplerConfig

__all__ = ["reference", "SampleResult", "merge_shards", "mean_pairwise_distance"]


def mean_pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """``[..., n, d] -> [...]``: the mean L2 distance over ordered pairs of distinct rows (the diagonal left out,
    not assumed 0: ``cdist`` of a row with itself need not be exactly 0); 0 for fewer than two rows.

    Example::

        >>> mean_pairwise_distance(torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]]))
        tensor(3.3333)
    """
    n = x.shape[-2]
    if n < 2:
        return x.new_zeros(x.shape[:-2])
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return torch.cdist(x, x)[..., off_diagonal].mean(-1)


@dataclass
class SampleResult:
    """Samples and diagnostics for ``n`` neurons with ``c`` chains each (all CPU tensors).

    Attributes:
        neurons: ``(layer_path, index)`` per neuron, in the order of the spec.
        images: ``[n, c, C, H, W]`` final chain states in pixel space, inside ``value_range``.
        activations: ``[n, c]`` activation of each chain's own neuron at its final state.
        trace: ``[n, c, steps]`` activation before each Langevin step (how the chains climbed).
        disc_scores: ``[n, c]`` D(x) in (0, 1) at the final state, or ``None`` without a discriminator.
        nonfinite_resets: ``[n]`` how many times a chain of that neuron went NaN/Inf and was re-initialised.
        value_range: the pixel box the images live in.
        discriminator: the trained discriminator (pass it back as ``discriminator=`` to warm-start), or ``None``.
        seconds: wall time of the call.
        step_seconds: mean wall time of one Langevin step after the first (device-synchronised; the first
            step's one-off costs and the call's setup excluded): the figure to extrapolate a call's cost from.
        acceptance_rate: ``[n]`` share of proposals accepted after burn-in (``method="mala"``; ``"hmc"``: of its
            transitions), else ``None``.
        step_sizes: ``[n]`` σ_k = √ε_k, the noise std per pixel and step of the sampling phase (unit box): MALA's as
            adapted in burn-in (``target_accept``), else ``step_size`` for every neuron; ``None`` for
            ``"ascent"``. ``"hmc"``: the MALA step its burn-in adapted; its leapfrogs take
            ``HMC_STEP_FRACTION`` (0.4) of it.
        metric: ``[n, *input_shape]`` the diagonal of the mass matrix M of the sampling phase (``metric="diagonal"``:
            drift ``(ε/2)·M·∇log p``, noise std ``σ_k·√M``; 1 at the stiffest pixel, ≥ 1 elsewhere), ``None`` for the
            identity.
        rhat: ``[n]`` rank-normalised split R-hat over the sampling phase (after burn-in), the worst of the
            activation's and of 4 fixed random projections of the image (:mod:`lightning_ldam.sampling.diagnostics`): ≈
            1 when the chains sample one law, above 1.1 not mixed. ``None`` for ``"ascent"`` or fewer than 4
            sampling steps.
        ess: ``[n]`` bulk effective sample size over the sampling phase, the smallest of the same quantities: how
            many independent draws all of a neuron's chains together are worth.
        rhat_activation, ess_activation: ``[n]`` the same of the activation alone.
        scales: ``[n]`` ``c_k``, each neuron's scale in the law ``exp(a_k/(c_k·T) + λ_k·log D)`` (``None`` for
            ``method="ascent"``, which samples no fixed law).
        disc_weights: ``[n]`` ``λ_k``, the weight of log D in that law (``None`` without a discriminator term).
        sampler_config: the settings used (:class:`~lightning_ldam.sampling.config.SamplerConfig`, every default
            filled in): pass it back as ``config=`` to sample again with them.
        config: the same settings by name (``sampler_config.settings()``), with the call's own (``chains``,
            ``seed``, ``spatial``, ``init``, ``device``, ``disc_rebuilt``, ``layer_settings``), for logging.
        real_activations: ``[N_real, n]`` the same neurons' activations on the real inputs the call was given
            (read as the sampler reads them; at most 256 images), or ``None``: the scale that lift and the
            neuron-health counts are measured on.
        cross_activations: ``{source: [n, c]}`` this result's units (its weights) read on another set of chains of
            the same neurons (each chain on its own neuron): ``"raw"``'s chains for an averaged variant and each
            averaged variant's for ``raw``, ``"previous"`` for this variant's chains of the previous round. Filled
            by :func:`lightning_ldam.engine.rounds.sample_variants` (with real inputs); the scale of
            :func:`lightning_ldam.report.metrics.transfer`.
    """

    neurons: List[Tuple[str, int]]
    images: torch.Tensor
    activations: torch.Tensor
    trace: torch.Tensor
    disc_scores: Optional[torch.Tensor]
    nonfinite_resets: torch.Tensor
    value_range: Tuple[float, float]
    discriminator: Optional[nn.Module] = None
    seconds: float = 0.0
    step_seconds: float = 0.0
    acceptance_rate: Optional[torch.Tensor] = None
    step_sizes: Optional[torch.Tensor] = None
    metric: Optional[torch.Tensor] = None
    rhat: Optional[torch.Tensor] = None
    ess: Optional[torch.Tensor] = None
    rhat_activation: Optional[torch.Tensor] = None
    ess_activation: Optional[torch.Tensor] = None
    scales: Optional[torch.Tensor] = None
    disc_weights: Optional[torch.Tensor] = None
    sampler_config: Optional["SamplerConfig"] = None
    config: Dict[str, object] = field(default_factory=dict)
    real_activations: Optional[torch.Tensor] = None
    cross_activations: Dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mean_images(self) -> torch.Tensor:
        """``[n, C, H, W]`` pixel-wise mean over chains: what every sample of the neuron shares."""
        return self.images.mean(dim=1)

    @property
    def std_images(self) -> torch.Tensor:
        """``[n, C, H, W]`` pixel-wise std over chains: where the neuron tolerates variation."""
        return self.images.std(dim=1, unbiased=False)

    @property
    def diversity(self) -> torch.Tensor:
        """``[n]`` mean pairwise L2 distance between the chains of each neuron (0 with one chain)."""
        return mean_pairwise_distance(self.images.flatten(2))

    def layer_slice(self, layer: str) -> List[int]:
        """Positions (into the neuron axis) of the neurons that belong to ``layer``."""
        return [i for i, (path, _) in enumerate(self.neurons) if path == layer]

    def __repr__(self) -> str:
        n, c = self.activations.shape
        return (f"SampleResult(neurons={n}, chains={c}, image={tuple(self.images.shape[2:])}, "
                f"mean_activation={self.activations.mean().item():.4g}, resets={int(self.nonfinite_resets.sum())}, "
                f"seconds={self.seconds:.2f})")


def merge_shards(shards: List[Optional[SampleResult]]) -> SampleResult:
    """Reassemble results sharded round-robin over ranks (rank r sampled neurons r, r+W, r+2W, ...).

    ``shards[r]`` is rank r's result, or ``None`` for a rank that got no neuron.
    """
    world = len(shards)
    present = [s for s in shards if s is not None]
    ranks = cast(List[SampleResult], shards)  # round-robin: every rank that ``order`` reads sampled a neuron
    total = sum(len(s.neurons) for s in present)
    order = [(j % world, j // world) for j in range(total)]

    def stack(field_name: str) -> Optional[torch.Tensor]:
        if getattr(present[0], field_name) is None:
            return None
        return torch.stack([getattr(shards[r], field_name)[i] for r, i in order])

    def stack_all(field_name: str) -> torch.Tensor:  # a field no result leaves None
        return cast(torch.Tensor, stack(field_name))

    first = present[0]
    return SampleResult(
        neurons=[ranks[r].neurons[i] for r, i in order], images=stack_all("images"),
        activations=stack_all("activations"), trace=stack_all("trace"), disc_scores=stack("disc_scores"),
        nonfinite_resets=stack_all("nonfinite_resets"), value_range=first.value_range, discriminator=None,
        seconds=max(s.seconds for s in present), step_seconds=max(s.step_seconds for s in present),
        acceptance_rate=stack("acceptance_rate"), step_sizes=stack("step_sizes"), scales=stack("scales"),
        metric=stack("metric"), disc_weights=stack("disc_weights"),
        rhat=stack("rhat"), ess=stack("ess"), rhat_activation=stack("rhat_activation"),
        ess_activation=stack("ess_activation"),
        sampler_config=first.sampler_config, config=dict(first.config),
        real_activations=None if first.real_activations is None else
        torch.stack([cast(torch.Tensor, ranks[r].real_activations)[:, i] for r, i in order], dim=1),
        cross_activations={k: torch.stack([ranks[r].cross_activations[k][i] for r, i in order])
                           for k in first.cross_activations if all(k in s.cross_activations for s in present)})


def reference(variants) -> Optional[str]:
    """The variant the others are read against: ``raw``, else the first (two checkpoints); ``None`` for none."""
    names = list(variants)
    return "raw" if "raw" in names else (names[0] if names else None)
