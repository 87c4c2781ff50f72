"""lightning_ldam: Langevin Dynamics Activation Maximization (LDAM, arXiv 1812.04604) for PyTorch.

``ldam.sample`` samples the inputs that maximally activate chosen neurons with Langevin MCMC,
optionally kept natural-looking by a GAN-style discriminator trained against real data.

Example::

    >>> import torch, lightning_ldam as ldam
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4 * 26 * 26, 10))
    >>> res = ldam.sample(net, "3:0-2", input_shape=(1, 28, 28), chains=4, steps=10)
    >>> tuple(res.images.shape)
    (3, 4, 1, 28, 28)
"""
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.api import sample
from lightning_ldam.sampling.config import (
    ChainsConfig,
    DiscriminatorConfig,
    InputConfig,
    LangevinConfig,
    SamplerConfig,
    SpeedOptions,
)
from lightning_ldam.sampling.result import SampleResult
from lightning_ldam.sampling.targets import list_targets

__version__ = "0.1.0"

__all__ = ["sample", "LDAMCallback", "SampleResult", "SamplerConfig", "LangevinConfig", "DiscriminatorConfig",
           "ChainsConfig", "InputConfig", "SpeedOptions", "list_targets", "LDAMArgumentError", "__version__"]


def __getattr__(name):
    # The callback is imported lazily so that `import lightning_ldam` for the sampler alone stays
    # free of Lightning.
    if name == "LDAMCallback":
        from lightning_ldam.callback import LDAMCallback

        return LDAMCallback
    raise AttributeError(f"module 'lightning_ldam' has no attribute {name!r}")
