"""Where a round's images and scalars go: TensorBoard, any logger with ``log_image``, else PNG files.

Duck-typed over loggers (no Lightning import). Errors propagate: the caller's failure boundary decides what a
failed write means (the callback: a warning and a skipped round, never a crashed run).
"""
from __future__ import annotations

import errno
import os
import re
from typing import Iterable, Mapping, Optional, cast

import torch

from lightning_ldam.report.tensorboard_writer import write_round_to

__all__ = ["write_round", "png_path", "save_png", "is_tensorboard", "check_room", "DISK_RESERVE_BYTES",
           "settings_text", "write_settings"]


def is_tensorboard(logger) -> bool:
    return type(logger).__name__ == "TensorBoardLogger"


def file_safe(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and ``_.=+-`` turned into ``_``."""
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text)


def png_path(directory: str, tag: str, step: Optional[int] = None) -> str:
    """``ldam/raw/features.0`` at step 12 -> ``<directory>/ldam_raw_features-0_step0000012.png``."""
    name = file_safe(tag.replace("/", "_").replace(".", "-"))
    return os.path.join(directory, name + ("" if step is None else f"_step{step:07d}") + ".png")


def save_png(image: torch.Tensor, path: str) -> None:
    """Write a ``[3, H, W]`` image in [0, 1] (creating the directory)."""
    from torchvision.utils import save_image

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_image(image, path)


#: Free space a round's write must leave on the disk it writes to: the callback never takes a disk's last bytes,
#: which the run's own logs and checkpoints need (a full disk would end them, and with them the run).
DISK_RESERVE_BYTES = 16 * 2 ** 20


def check_room(directory: Optional[str], images: Mapping[str, torch.Tensor], scalars: Mapping[str, float]) -> None:
    """Raise ``OSError(ENOSPC)`` when writing the round under ``directory`` would leave less than
    :data:`DISK_RESERVE_BYTES` free (the images counted uncompressed, an upper bound of their PNG size)."""
    if not directory:
        return
    path = os.path.abspath(directory)
    while path and not os.path.exists(path):  # the log directory may not exist yet
        parent = os.path.dirname(path)
        path = parent if parent != path else ""
    try:
        stats = os.statvfs(path or ".")
    except (OSError, AttributeError):  # no statvfs (Windows) or no such path: let the write itself say
        return
    free = stats.f_bavail * stats.f_frsize
    needed = sum(img.numel() for img in images.values()) + 64 * len(scalars)
    if free - needed < DISK_RESERVE_BYTES:
        raise OSError(errno.ENOSPC, f"writing this round ({needed / 2 ** 10:.0f} KiB) would leave "
                                    f"{max(free - needed, 0) / 2 ** 20:.1f} MiB free on the disk of {directory}, under "
                                    f"the {DISK_RESERVE_BYTES / 2 ** 20:.0f} MiB the callback leaves to the run's own "
                                    f"logs and checkpoints; nothing was written")


def settings_text(config: Mapping[str, object], variants: Iterable[str]) -> str:
    """A round's resolved sampler settings as a Markdown table (TensorBoard's text plugin renders it)."""
    rows = [f"| {key} | {value} |" for key, value in config.items() if key not in ("layer_settings",)]
    layers = cast(Mapping[str, object], config.get("layer_settings") or {})
    rows += [f"| {layer} | {values} |" for layer, values in dict(layers).items()]
    return "\n".join([f"variants: {', '.join(variants)}", "", "| setting | value |", "|---|---|", *rows])


def write_settings(loggers: Iterable, text: str, step: int) -> None:
    """``text`` as the TensorBoard text ``ldam/settings`` (other loggers have no text to write)."""
    for logger in loggers:
        if is_tensorboard(logger):
            logger.experiment.add_text("ldam/settings", text, global_step=step)


def write_round(loggers: Iterable, images: Mapping[str, torch.Tensor], scalars: Mapping[str, float], step: int,
                png_dir: str) -> bool:
    """Write to every logger, scalars before images: TensorBoard gets both (a failed write reopens its writer:
    :mod:`lightning_ldam.report.tensorboard_writer`), others ``log_metrics`` and ``log_image`` if they have it. Without
    an image-capable logger the images go to PNGs under ``png_dir``.

    Each logger, and within it the scalars and the images, fails on its own: a failed image write never loses
    the round's scalars, and one failing logger never keeps the others from their writes.

    Returns:
        Whether PNG files were written.

    Raises:
        Exception: the first write error, once every logger has been tried.
    """
    wrote_images, errors = False, []
    for logger in loggers:
        try:
            if is_tensorboard(logger):
                wrote_images = True
                check_room(getattr(logger, "log_dir", None), images, scalars)
                write_round_to(logger.experiment, images, scalars, step)
                continue
            if hasattr(logger, "log_image"):
                wrote_images = True
            logger.log_metrics(dict(scalars), step=step)
            if hasattr(logger, "log_image"):
                for tag, img in images.items():
                    logger.log_image(key=tag, images=[img], step=step)
        except Exception as err:
            errors.append(err)
    if not wrote_images:
        try:
            check_room(png_dir, images, {})
            for tag, img in images.items():
                save_png(img, png_path(png_dir, tag, step))
        except Exception as err:
            errors.append(err)
    if errors:
        raise errors[0]
    return not wrote_images
