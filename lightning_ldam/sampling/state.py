"""Where the chains are: their states, their per-step scalars and what each step records.

The move itself is :func:`~lightning_ldam.sampling.steppers.langevin_move`.

The chains of all neurons live in one neuron-major batch (``chains`` consecutive rows per neuron) in the unit box
``u ∈ [0, 1]^d``. Every step is written graph-safe: no host sync, state updated in place, per-step scalars read
through :meth:`ChainState.at` (a Python float in an eager step, a device-table entry at a device counter in a
CUDA-graph replay).
"""
from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from lightning_ldam.sampling.config import LangevinConfig

__all__ = ["ChainState", "RESTART_SEED_OFFSET", "PROJECTIONS", "DUAL_AVERAGING"]

#: The fresh starts of chains that turn NaN/Inf come from their own generator, seeded with the chains' seed plus
#: this offset: the noise of the chains that never turn non-finite is the same whether or not others do.
RESTART_SEED_OFFSET = 0x5EED0F5
#: Fixed random projections of the state traced for the mixing diagnostics (besides the activation).
PROJECTIONS = 4
_PROJECTION_SEED = 0x1DA4
#: Dual averaging of MALA's step in burn-in's adapting half (Hoffman & Gelman 2014, the constants Stan uses):
#: the shrinkage γ, the iteration offset t0 and the averaging exponent κ. The iterate starts from
#: μ = log(√10·σ0) (Stan's log(10·ε0) in the noise scale σ = √ε).
DUAL_AVERAGING = {"gamma": 0.05, "t0": 10.0, "kappa": 0.75}


def _projections(dim: int, device) -> torch.Tensor:
    """``[dim, PROJECTIONS]`` unit-norm Gaussian directions, the same for every call (seeded privately)."""
    g = torch.Generator().manual_seed(_PROJECTION_SEED)
    p = torch.randn(dim, PROJECTIONS, generator=g)
    return (p / p.norm(dim=0, keepdim=True)).to(device)


class ChainState:
    """The chains' states and what the run records of them.

    Args:
        u0: ``[B, *shape]`` initial states in the unit box (``B = neurons·chains``, neuron-major).
        cfg: resolved settings.
        neurons: number of neurons.
        generator: the chains' private RNG (noise and the accept tests' uniforms; nothing else draws from it, so
            variants sampled with the same seed share their noise whatever their discriminators do). The fresh
            starts of chains that turn non-finite come from :attr:`restart_gen`, seeded from it (see
            :data:`RESTART_SEED_OFFSET`).
        graph: also keep the per-step scalars in device tables, for the CUDA-graph form of the steps.
        held: ``[B]`` bool, rows that burn-in's search leaves where they are (continued chains), or ``None``.

    Attributes:
        u: ``[B, *shape]`` the states.
        trace: ``[steps, B]`` each chain's activation before each step.
        proj_trace: ``[sampling steps, B, PROJECTIONS]`` fixed random projections of the states (``None``
            without a sampling phase).
        resets: ``[B]`` how often each chain turned non-finite and restarted.
        accepted: ``[B]`` accepted proposals (MALA) or transitions (HMC) of the sampling phase.
        mass, mass_sqrt: the diagonal mass matrix M per row and its square root (``metric="diagonal"``; ones
            until burn-in fixes it), else ``None``.
    """

    def __init__(self, u0: torch.Tensor, cfg: LangevinConfig, neurons: int, generator: torch.Generator,
                 graph: bool = False, held: Optional[torch.Tensor] = None):
        self.cfg, self.n, self.gen = cfg, neurons, generator
        self.u = u0.clone()
        self.view = (-1,) + (1,) * (u0.dim() - 1)
        self.held = None if held is None else held.view(self.view)  # rows the search skips
        self.restart_gen = torch.Generator(device=generator.device).manual_seed(
            (generator.initial_seed() + RESTART_SEED_OFFSET) % 2 ** 63)
        batch, dev = u0.shape[0], u0.device
        self.chains = batch // neurons
        self.trace = torch.empty((cfg.steps, batch), device=dev)
        # the mixing diagnostics' second view: a few fixed random projections of each state over the sampling phase
        # (a private generator: the chains' own streams stay as they were)
        assert cfg.burn_in is not None, "ChainState takes a resolved config"
        self.draws = max(cfg.steps - cfg.burn_in, 0) if cfg.method != "ascent" else 0
        self.projection = _projections(u0[0].numel(), dev) if self.draws else None
        self.proj_trace = torch.empty((self.draws, batch, PROJECTIONS), device=dev) if self.draws else None
        self.resets = torch.zeros(batch, dtype=torch.long, device=dev)
        self.accepted = torch.zeros(batch, device=dev)
        self.diag = cfg.metric == "diagonal"
        self.mass = torch.ones_like(u0) if self.diag else None
        self.mass_sqrt = torch.ones_like(u0) if self.diag else None
        self.scalars = self._scalars()
        self.tables = {k: torch.tensor(v, device=dev) for k, v in self.scalars.items()} if graph else None
        self.counter = torch.zeros(1, dtype=torch.long, device=dev) if graph else None

    # ---- per-step scalars -------------------------------------------------------------------------------------
    def _scalars(self) -> Dict[str, list]:
        cfg = self.cfg
        assert cfg.burn_in is not None, "ChainState takes a resolved config"
        track = [max(1.0 / (t + 1), 8.0 / max(cfg.burn_in, 1)) for t in range(cfg.steps)]
        da = DUAL_AVERAGING
        # dual averaging's m-th iteration (m = 1 at the adapting half's first step; 0 outside it), started anew where a
        # diagonal metric is fixed
        start = cfg.search_steps if cfg.metric_end is None else cfg.metric_end
        m = [t - (start if t >= start else cfg.search_steps) + 1 if cfg.search_steps <= t < cfg.burn_in else 0
             for t in range(cfg.steps)]
        end = cfg.metric_end or 0
        return {"half_eps": [0.5 * cfg.eps(t) for t in range(cfg.steps)],
                "noise": [cfg.noise_std(t) for t in range(cfg.steps)],
                "track": track,  # running mean over the first steps, then an EMA over ~⅛ of burn-in
                "psgld": [1.0 / (1 - 0.99 ** (t + 1)) for t in range(cfg.steps)],
                "da_rate": [1.0 / (k + da["t0"]) if k else 0.0 for k in m],
                "da_shrink": [math.sqrt(k) / da["gamma"] for k in m],
                "da_average": [k ** -da["kappa"] if k else 0.0 for k in m],
                "metric_window": [1.0 if cfg.search_steps <= t < end else 0.0 for t in range(cfg.steps)]}

    def at(self, name: str, t: Optional[int]):
        """Per-step scalar ``name`` at step ``t`` (``None``: the graph form, read at the device counter)."""
        if t is None:
            assert self.tables is not None and self.counter is not None, "the graph form keeps device tables"
            return self.tables[name].index_select(0, self.counter)
        return self.scalars[name][t]

    def per_row(self, v: torch.Tensor) -> torch.Tensor:
        """A per-neuron value repeated over its rows, shaped to broadcast over a row's pixels."""
        return v.repeat_interleave(self.chains).view(self.view)

    def per_neuron(self, v: torch.Tensor) -> torch.Tensor:
        """A per-row value averaged over each neuron's rows."""
        return v.view(self.n, self.chains).mean(1)

    def record(self, t: Optional[int], acts: torch.Tensor) -> None:
        """Trace the activations before step ``t`` (and, in the sampling phase, the states' projections)."""
        assert self.cfg.burn_in is not None, "ChainState takes a resolved config"
        if t is not None:
            self.trace[t] = acts
            if self.draws and t >= self.cfg.burn_in:
                assert self.projection is not None and self.proj_trace is not None  # kept while there are draws
                torch.mm(self.u.flatten(1), self.projection, out=self.proj_trace[t - self.cfg.burn_in])
        else:
            assert self.counter is not None, "the graph form keeps a device counter"
            self.trace.index_copy_(0, self.counter, acts.unsqueeze(0))
            if self.draws:  # burn-in's steps all write slot 0, which the first sampling step then overwrites
                assert self.projection is not None and self.proj_trace is not None  # kept while there are draws
                slot = (self.counter - self.cfg.burn_in).clamp_min_(0)
                self.proj_trace.index_copy_(0, slot, (self.u.flatten(1) @ self.projection).unsqueeze(0))

    def tick(self, t: Optional[int]) -> None:
        """End of a step in the graph form: the device counter moves on (eager steps know their ``t``)."""
        if t is None:
            assert self.counter is not None, "the graph form keeps a device counter"
            self.counter.add_(1)
