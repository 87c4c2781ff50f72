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
import logging
import math
import warnings
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.sampling.config import FRESH_DISC_WARMUP

if TYPE_CHECKING:
    from lightning_ldam.sampling.config import DiscriminatorConfig

__all__ = ["Discriminator", "DiscriminatorTrainer", "DiscriminatorKeeper", "build_discriminator",
           "restore_discriminator", "check_discriminator", "finite_weights", "colour_statistics", "MAX_SIDE"]

log = logging.getLogger(__name__)

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


class DiscriminatorKeeper:
    """One call's D and its trainer: the one given or a fresh one, rebuilt whenever its weights turn NaN/Inf.

    A non-finite D scores every image NaN and its gradient drives every chain to NaN; returned, it would spoil the
    warm start of every later call. So a given one is replaced (with a warning: the caller's argument) and one that
    breaks while training is rebuilt at the end of burn-in and of the call (logged, like the chains' resets).

    Args:
        config: the call's resolved discriminator settings (``disc_warmup`` set).
        given: the caller's D, or ``None``.
        u0: ``[B, C, H, W]`` the chains' starts in the unit box (D warms up on them; their device is D's).
        real: ``[N, C, H, W]`` real images in the unit box, or ``None`` (then D is not trained).
        seed: the call's seed (a fresh D's weights).
        generator: D's own RNG (its real batches), apart from the chains' streams.
        active: whether the law uses D (λ > 0); without it and without a given D there is none.

    Attributes:
        module: the D in use (``None``: none).
        trainer: its :class:`DiscriminatorTrainer` (``None`` without real data).
        rebuilt: whether a NaN/Inf D was replaced.
    """

    module: Optional[nn.Module]
    trainer: Optional[DiscriminatorTrainer]
    flags: Optional[Tuple[List[Tuple[nn.Parameter, bool]], bool]]

    def __init__(self, config: "DiscriminatorConfig", given: Optional[nn.Module], u0: torch.Tensor,
                 real: Optional[torch.Tensor], seed: int, generator: torch.Generator, active: bool):
        self.config, self.real, self.seed, self.generator = config, real, seed, generator
        self.shape, self.device = tuple(u0.shape[1:]), u0.device
        self.module, self.trainer, self.rebuilt, self.flags = None, None, False, None
        if not active and given is None:
            return
        warmup = config.disc_warmup
        assert warmup is not None, "DiscriminatorKeeper takes a resolved config"
        if given is not None and not finite_weights(given):
            if real is None:
                raise LDAMArgumentError("discriminator", "expected finite weights, got a discriminator with NaN/Inf "
                                        "weights and no real_data to train a fresh one; pass real_data=..., or "
                                        "discriminator=None")
            warmup = self._fresh_warmup
            warnings.warn(f"The discriminator given to sample() has NaN/Inf weights; it is left as it is and a fresh "
                          f"one (seed {seed}, {warmup} warm-up updates) is used and returned instead.",
                          RuntimeWarning, stacklevel=4)
            given, self.rebuilt = None, True
        if given is not None:
            given = given.to(self.device)
            check_discriminator(given, self.shape, self.device)
        self._use(given if given is not None else self._build(), u0, warmup)

    @property
    def _fresh_warmup(self) -> int:
        """Warm-up updates of a D built here to replace a broken one (the given setting, else a fresh D's default)."""
        return self.config.disc_warmup or FRESH_DISC_WARMUP

    def _build(self) -> nn.Module:
        return build_discriminator(self.shape[0], self.shape[1:], self.seed, self.device)

    def _use(self, disc: nn.Module, u: torch.Tensor, warmup: int) -> None:
        """Take ``disc`` (on the device) and warm it up on the chain states ``u`` (with real data only)."""
        self.module = disc.to(self.device)
        if self.real is not None:
            self.trainer = DiscriminatorTrainer(self.module, self.real, self.generator, lr=self.config.disc_lr)
            for _ in range(warmup):
                self.trainer.step(u)
        self.flags = ([(p, p.requires_grad) for p in self.module.parameters()], self.module.training)
        self.module.requires_grad_(True)

    def ensure_finite(self, u: torch.Tensor) -> bool:
        """Rebuild D if a weight turned NaN/Inf (one host sync), warmed up on the chain states ``u``; whether it was."""
        if self.module is None or finite_weights(self.module):
            return False
        self.restore()
        self.rebuilt = True
        if self.trainer is None:  # an untrained D cannot turn non-finite; were it to, return none rather than it
            self.module = None
            return False
        warmup = self._fresh_warmup
        log.warning("LDAM: the discriminator's weights turned NaN/Inf while training; rebuilt it (seed %d) and warmed "
                    "it up on the current chains (%d updates)", self.seed, warmup)
        self._use(self._build(), u, warmup)
        return True

    def train(self, u: torch.Tensor) -> None:
        """``disc_steps`` updates against the chain states ``u`` (none without real data)."""
        if self.trainer is not None:
            for _ in range(self.config.disc_steps):
                self.trainer.step(u)

    def scores(self, u: torch.Tensor) -> Optional[torch.Tensor]:
        return None if self.module is None else torch.sigmoid(self.module.eval()(u)).float()

    def restore(self) -> None:
        """``requires_grad`` and the mode of the D in use back as they were when it was taken."""
        if self.flags is not None:
            for p, flag in self.flags[0]:
                p.requires_grad_(flag)
            assert self.module is not None  # flags are kept for the D in use
            self.module.train(self.flags[1])
            self.flags = None


def check_discriminator(disc: nn.Module, shape: Tuple[int, ...], device: torch.device) -> None:
    """Does D fit the input? One forward of two unit-box images, in eval mode without grad (no state changes).

    Raises:
        LDAMArgumentError: ``discriminator``, naming what it expected and what it got.
    """
    probe = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0)).to(device)
    expected = f"a module taking unit-box images [B, {', '.join(map(str, shape))}] and returning logits [B]"
    training = disc.training
    try:
        with torch.no_grad():
            out = disc.eval()(probe)
    except Exception as err:
        raise LDAMArgumentError("discriminator", f"expected {expected}; its forward raised on a batch of shape "
                                f"{tuple(probe.shape)}: {type(err).__name__}: {err}") from err
    finally:
        disc.train(training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2,):
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise LDAMArgumentError("discriminator", f"expected {expected}; got {got} for a batch of shape "
                                f"{tuple(probe.shape)}")
