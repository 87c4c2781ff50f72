"""The GAN-style discriminator D(x) that keeps Langevin samples near the data.

``log D(x)`` enters the LDAM energy with weight lambda (``disc_weight``). D is a small convolutional
network with spectral normalisation (keeps its input gradient bounded, so the Langevin drift it
adds stays well scaled) trained online against real images (label 1) and the current chain states
(label 0) with the non-saturating logistic GAN loss. On colour images its head also reads each image's colour
statistics (the mean colour and the 3×3 covariance of its pixels' colours): a conv stack of a few stride-2 layers
does not see that a sample's colours drift across the image while a real image's sit on a few flat regions, and
that one global feature does (docs/decisions/0009-colour-discriminator.md).
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, Optional, Sequence, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

__all__ = ["Discriminator", "DiscriminatorTrainer", "build_discriminator", "restore_discriminator", "finite_weights",
           "colour_statistics", "MAX_SIDE"]

#: Features the colour statistics are mapped to before D's head.
STATS_WIDTH = 32
#: The largest side D looks at: larger images are average-pooled down by a whole factor first (D's cost stays bounded
#: at 224 px). Smaller images are looked at at full resolution, whatever their channels
#: (docs/decisions/0017-one-set-of-defaults.md).
MAX_SIDE = 64


class Discriminator(nn.Module):
    """Spectral-norm conv discriminator for ``[B, C, H, W]`` images in ``[0, 1]`` (unit box).

    Stride-2 convolutions halve the resolution until it is at most 4 pixels (at most 5 of them),
    then a global average pool and a linear layer give one logit per image. Inputs larger than
    ``max_size`` are average-pooled down first, which keeps D cheap next to a 224 px network.

    Args:
        in_channels: image channels.
        image_size: ``(H, W)`` of the inputs.
        width: channels of the first conv (doubling per level, capped at ``8 * width``;
            docs/decisions/0002-discriminator-width-16.md).
        max_size: largest side D looks at (larger inputs are average-pooled down by a whole factor). Default:
            :data:`MAX_SIDE` (64).
        colour_stats: also read each image's mean colour and colour covariance (default: on for more than one
            channel; a grayscale image's "covariance" is its variance, which did not help on MNIST).

    Example::

        >>> d = Discriminator(1, (28, 28))
        >>> d(torch.rand(5, 1, 28, 28)).shape
        torch.Size([5])
    """

    def __init__(self, in_channels: int, image_size: Sequence[int], width: int = 16, max_size: Optional[int] = None,
                 colour_stats: Optional[bool] = None):
        super().__init__()
        h, w = int(image_size[0]), int(image_size[1])
        max_size = MAX_SIDE if max_size is None else max_size
        self.pool_factor = max(1, math.ceil(max(h, w) / max_size))
        side = min(h, w) // self.pool_factor
        levels = max(1, min(5, math.ceil(math.log2(max(side, 2) / 4))))
        layers = []
        ch = in_channels
        for i in range(levels):
            out = min(width * 2 ** i, width * 8)
            layers += [spectral_norm(nn.Conv2d(ch, out, 4 if i == 0 else 3, stride=2, padding=1)),
                       nn.LeakyReLU(0.2)]
            ch = out
        layers += [spectral_norm(nn.Conv2d(ch, ch, 3, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.stats = None
        if in_channels > 1 if colour_stats is None else colour_stats:
            c = in_channels
            self.register_buffer("triu", torch.triu_indices(c, c), persistent=False)
            self.stats = nn.Sequential(spectral_norm(nn.Linear(c + c * (c + 1) // 2, STATS_WIDTH)), nn.LeakyReLU(0.2))
        self.head = spectral_norm(nn.Linear(ch + (STATS_WIDTH if self.stats is not None else 0), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per image (``log D = logsigmoid(logit)``)."""
        if self.pool_factor > 1:
            x = F.avg_pool2d(x, self.pool_factor, ceil_mode=True)
        z = x * 2 - 1  # unit box -> [-1, 1], centred like a GAN's input
        h = self.features(z).mean(dim=(2, 3))
        if self.stats is not None:
            h = torch.cat([h, self.stats(colour_statistics(z, cast(torch.Tensor, self.triu)))], 1)  # a buffer
        return self.head(h).squeeze(1)


def colour_statistics(z: torch.Tensor, triu: torch.Tensor) -> torch.Tensor:
    """``[B, C + C(C+1)/2]``: each image's mean colour and the upper triangle of its pixels' colour covariance
    (×4: the covariance of [-1, 1] values is small next to the means).

    Example::

        >>> z = torch.stack([torch.full((3, 2, 2), 0.5), torch.tensor([1.0, -1.0]).repeat(3, 2, 1)])
        >>> colour_statistics(z, torch.triu_indices(3, 3))[:, [0, 3]]  # red's mean, red's variance
        tensor([[0.5000, 0.0000],
                [0.0000, 4.0000]])
    """
    flat = z.flatten(2)
    mean = flat.mean(2)
    centred = flat - mean.unsqueeze(2)
    cov = centred @ centred.transpose(1, 2) / flat.shape[2]
    return torch.cat([mean, 4 * cov[:, triu[0], triu[1]]], 1)


class DiscriminatorTrainer:
    """Owns a discriminator, its optimiser and the real images it learns from.

    Args:
        discriminator: the module (its parameters are updated in place).
        real: real images in the unit box, ``[N, C, H, W]``, on the sampling device.
        generator: private RNG for picking real batches.
        lr: Adam learning rate.
        batch_size: real and fake images per update (fake: a random subset of the chains;
            docs/decisions/0002-discriminator-width-16.md, docs/decisions/0018-d-cost-against-quality.md).
    """

    def __init__(self, discriminator: nn.Module, real: torch.Tensor, generator: torch.Generator,
                 lr: float = 1e-3, batch_size: int = 64):
        self.discriminator = discriminator
        self.real = real
        self.generator = generator
        self.batch_size = batch_size
        fused = all(p.is_cuda for p in discriminator.parameters())  # one kernel per step on the GPU
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999),
                                          fused=fused or None)

    def _pick(self, pool: torch.Tensor) -> torch.Tensor:
        n = min(self.batch_size, pool.shape[0])
        idx = torch.randint(pool.shape[0], (n,), generator=self.generator, device=self.generator.device)
        return pool[idx.to(pool.device)]

    def step(self, fake: torch.Tensor) -> torch.Tensor:
        """One update on a real batch vs ``fake`` (detached chain states). Returns the loss (0-dim tensor, no sync)."""
        d = self.discriminator
        was_training = d.training
        d.train()
        real = self._pick(self.real)
        fake = self._pick(fake.detach())
        logits = d(torch.cat([real, fake]))
        loss = F.softplus(-logits[: real.shape[0]]).mean() + F.softplus(logits[real.shape[0]:]).mean()
        grads = torch.autograd.grad(loss, [p for p in d.parameters() if p.requires_grad])
        for p, g in zip((p for p in d.parameters() if p.requires_grad), grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        d.train(was_training)
        return loss.detach()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log D(x)`` per image (differentiable w.r.t. ``x``)."""
        return F.logsigmoid(self.discriminator(x))


def build_discriminator(in_channels: int, image_size: Sequence[int], seed: int,
                        device: Optional[torch.device] = None, width: Optional[int] = None,
                        colour_stats: Optional[bool] = None, max_size: Optional[int] = None) -> Discriminator:
    """A fresh discriminator initialised from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        d = Discriminator(in_channels, image_size, width=16 if width is None else width, max_size=max_size,
                          colour_stats=colour_stats)
    return d.to(device) if device is not None else d


def restore_discriminator(state: Dict[str, torch.Tensor], in_channels: int, image_size: Sequence[int],
                          seed: int = 0) -> Discriminator:
    """The discriminator :func:`build_discriminator` makes for these images, with ``state`` loaded.

    Raises:
        ValueError: ``state`` is not one of such a discriminator (another width, resolution or input); the message
            says which keys or shapes differ.
    """
    d = build_discriminator(in_channels, image_size, seed)
    try:
        d.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"expected the state of a discriminator for {in_channels}x{'x'.join(map(str, image_size))} "
                         f"images as this version builds it: {' '.join(str(err).split())}") from None
    return d


def finite_weights(module: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer of ``module`` is finite (one host sync).

    A discriminator with a NaN/Inf weight (or spectral-norm vector) scores every image NaN, and its gradient drives
    every chain to NaN: the sampler rebuilds such a D rather than use or return it.

    Example::

        >>> d = build_discriminator(1, (12, 12), seed=0)
        >>> finite_weights(d)
        True
        >>> with torch.no_grad():
        ...     d.head.parametrizations.weight.original[0, 0] = float("nan")
        >>> finite_weights(d)
        False
    """
    tensors = [t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    device = tensors[0].device
    return bool(torch.stack([torch.isfinite(t.detach()).all().to(device) for t in tensors]).all())
