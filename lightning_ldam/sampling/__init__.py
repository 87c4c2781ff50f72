"""The LDAM sampler: Langevin chains that sample the inputs a unit responds to most (plain PyTorch, no Lightning).

- :mod:`~lightning_ldam.sampling.api`: :func:`sample`, the one entry point;
- :mod:`~lightning_ldam.sampling.config`: the settings and what each method samples;
- :mod:`~lightning_ldam.sampling.steppers`: the update rule of every method (:mod:`~lightning_ldam.sampling.law`:
  the law it samples; :mod:`~lightning_ldam.sampling.burn_in`: the steps that fix it);
- :mod:`~lightning_ldam.sampling.loop`: the loop over one call's steps;
- :mod:`~lightning_ldam.sampling.discriminator`: D, the realism prior, and its online training;
- :mod:`~lightning_ldam.sampling.targets`: neuron specs and layer paths;
- :mod:`~lightning_ldam.sampling.activations` and :mod:`~lightning_ldam.sampling.unit_axes`: reading a unit;
- :mod:`~lightning_ldam.sampling.inputs`: model inputs out of batches;
- :mod:`~lightning_ldam.sampling.result`: what a call returns;
- :mod:`~lightning_ldam.sampling.diagnostics`: R-hat and ESS;
- :mod:`~lightning_ldam.sampling.progress`: progress bars and log lines.
"""
from lightning_ldam.sampling.api import sample
from lightning_ldam.sampling.result import SampleResult

__all__ = ["sample", "SampleResult"]
