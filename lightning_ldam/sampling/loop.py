"""The loop over one call's steps: burn-in's phases in order, D's updates, and the CUDA-graph form of a step.

Each step is the method's (:mod:`~lightning_ldam.sampling.chains`); the loop decides which phase runs, when burn-in
fixes the scales, the metric and the law, and when D trains (every ``disc_every`` steps of burn-in; of the whole
run for ``"ascent"``). It times the steps and drives the progress display.

This module imports no Lightning.
"""
from __future__ import annotations

import time
from typing import Optional, Sequence, Union

import torch

from lightning_ldam.sampling.chains import LangevinChains
from lightning_ldam.sampling.config import LangevinConfig
from lightning_ldam.sampling.discriminator import DiscriminatorKeeper
from lightning_ldam.sampling.progress import Progress, is_terminal

__all__ = ["run_steps", "GraphedStep", "graphs_supported", "synchronized_clock", "progress_tracker"]


def run_steps(chains: LangevinChains, disc: DiscriminatorKeeper, cfg: LangevinConfig, cuda_graph: bool,
              device: torch.device, progress: Union[bool, float, Progress]) -> float:
    """Run every step (one phase after the other); returns the mean synchronised seconds per step after the first."""
    assert cfg.burn_in is not None, "run_steps takes a resolved config"
    phases = chains.phases()
    generators = (chains.state.gen, chains.state.restart_gen)
    graphed = {name: GraphedStep(step, generators, device) for name, step in phases.items()} if cuda_graph else None
    tracker = progress_tracker(progress, cfg.steps)
    timed_from = 1 if cfg.steps > 1 else 0  # step 0 pays one-off costs (allocator, cuDNN algorithm choice)
    timer = 0.0
    try:
        for t in range(cfg.steps):
            if t == timed_from:
                timer = synchronized_clock(device)
            phase = "sample" if t >= cfg.burn_in else ("search" if t < cfg.search_steps else "adapt")
            if cfg.method != "ascent" and t == cfg.search_steps:
                chains.freeze_scales()
            if t == cfg.metric_end:
                chains.fix_metric()
            if cfg.method != "ascent" and t == cfg.burn_in:
                if disc.ensure_finite(chains.u):  # D is frozen from here on: one check, one sync
                    assert disc.module is not None  # rebuilt
                    chains.replace_discriminator(disc.module)
                chains.freeze()
            if graphed is not None:
                graphed[phase]()
            else:
                phases[phase](t)
            if (phase != "sample" or cfg.method == "ascent") and (t + 1) % disc.config.disc_every == 0:
                disc.train(chains.u)
            if tracker is not None:
                tracker.update(1)
    finally:
        if tracker is not None:
            tracker.close()
    return (synchronized_clock(device) - timer) / (cfg.steps - timed_from)


def graphs_supported(device: torch.device) -> bool:
    # One place for the check, so the CPU tests can run the graph form of the step without a GPU.
    return device.type == "cuda"


class GraphedStep:
    """Replays one Langevin step as a CUDA graph: the first steps run eagerly on a side stream (CUDA
    libraries and the allocator settle), the next one is captured, then every call is one graph launch.

    The step must be graph-safe: fixed shapes, no host sync, state updated in place, per-step scalars read
    on the device. ``generators`` (one or a sequence: the step's RNGs) are registered with the graph, so replays
    draw fresh numbers from them.
    """

    WARMUP = 3

    def __init__(self, step, generators: Union[torch.Generator, Sequence[torch.Generator]], device: torch.device):
        self.step, self.device = step, device
        self.generators = (generators,) if isinstance(generators, torch.Generator) else tuple(generators)
        self.calls = 0
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.stream = torch.cuda.Stream(device)

    def __call__(self) -> None:
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            if self.calls <= self.WARMUP:
                self.step(None)
            else:
                graph = torch.cuda.CUDAGraph()
                for generator in self.generators:
                    graph.register_generator_state(generator)
                try:
                    with torch.cuda.graph(graph, stream=self.stream):
                        self.step(None)
                except Exception as err:
                    raise RuntimeError(f"cuda_graph: capturing the Langevin step failed ({type(err).__name__}: "
                                       f"{err}); sample with cuda_graph=False") from err
                self.graph = graph
        torch.cuda.current_stream(self.device).wait_stream(self.stream)
        if self.graph is not None:
            self.graph.replay()


def synchronized_clock(device: torch.device) -> float:
    """``time.perf_counter()`` once the device's queued work is done (GPU kernels run asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def progress_tracker(progress: Union[bool, float, Progress], total: int):
    """The tracker of ``total`` steps for ``sample``'s ``progress`` (``None``: nothing shown)."""
    if progress is False:
        return None
    if not isinstance(progress, Progress):
        # True or seconds: a bar on a terminal only; plain lines are asked for by passing a Progress (a log file
        # would otherwise get a line from every call)
        if not is_terminal():
            return None
        progress = Progress(delay=0.0 if progress is True else float(progress), terminal=True)
    return progress.start(total)
