"""Turn LDAM samples into labelled image sheets for TensorBoard (and PNG files).

One fixed value scaling (the sampler's ``value_range`` → [0, 1]) and no per-image normalisation, so steps and
variants are comparable; small images are upscaled with nearest-neighbour for legibility. Inputs that are not
images get a picture too: a vector of up to 32 features is drawn as a 1 × D grey strip, a longer one as a
near-square grey tile filled row by row (784 values: 28 × 28; the cells past the end grey), a ``[H, W]`` input as a
grey image. Row labels, variant names and column headers are drawn with Pillow's built-in font, dark on a light band.

TensorBoard's IMAGES dashboard draws every image at its card's width (350 px, whatever the window size: wider
sheets are shrunk, narrower ones enlarged). So the comparison sheet stacks its variants (a line per variant)
instead of putting them side by side, which keeps it about 300 px wide; default upscaling stops at
:data:`MAX_WIDTH`; and text on a sheet wider than the card is drawn larger, so that it still shows at least
12 px high in the card.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torchvision.transforms.functional import pil_to_tensor

from lightning_ldam._validation import check_positive, check_value_range
from lightning_ldam.errors import LDAMArgumentError

__all__ = ["neuron_grid", "compare_grid", "upscale_factor", "MAX_WIDTH", "MAX_CHAINS", "MAX_LABEL", "MIN_FIT_CHAINS",
           "MIN_FIT_TILE", "CARD_WIDTH"]

#: Width in px that default upscaling keeps a sheet under where it can (it never downscales).
MAX_WIDTH = 640
#: Default number of chains per variant a comparison sheet shows.
MAX_CHAINS = 4
#: A comparison sheet wider than TensorBoard's card shows fewer chains, down to this many, then smaller tiles, down
#: to :data:`MIN_FIT_TILE` px high.
MIN_FIT_CHAINS = 2
MIN_FIT_TILE = 16
#: Row labels and variant names are cut to this many characters (the last one an ellipsis).
MAX_LABEL = 16
#: Vectors up to this long are drawn as 1 × D strips; longer ones as near-square tiles, row by row.
MAX_STRIP = 32

_PAD = 2  # grey frame around each tile, as ``make_grid(padding=2)``
_GAP = 6  # light gutter between column blocks and between the neuron groups of a comparison sheet
_GREY, _BAND, _INK = 0.5, 242 / 255, 26 / 255  # the text layer is 8-bit
_CARD = 350  # TensorBoard's image cards draw every image this wide ...
CARD_WIDTH = _CARD
_FONT_SIZE = 12  # ... and text should show at least this high in them
_MAX_FONT_SIZE = 24  # (up to sheets twice the card's width)
_TEXT_PAD = 4
_GRID_TILE = 56  # a neuron grid's tiles are at least this high, or at least _MIN_TILE where that is too wide
_MIN_TILE = 28  # a comparison sheet's tiles are at least this high, or at least a text line where too wide
_ELLIPSIS = "…"


def upscale_factor(height: int, min_size: int = _GRID_TILE) -> int:
    """Integer nearest-neighbour factor that makes a tile at least ``min_size`` pixels high."""
    return max(1, -(-min_size // height))


def _as_images(samples: torch.Tensor, argument: str = "images") -> torch.Tensor:
    """``[n, chains, *sample]`` -> ``[n, chains, C, H, W]``: ``[H, W]`` is grey, anything else not ``[C, H, W]`` is
    flattened to a vector: a 1-pixel-high strip up to :data:`MAX_STRIP` values, else a near-square tile filled row
    by row (NaN, drawn grey, past the end)."""
    if not isinstance(samples, torch.Tensor) or samples.dim() < 3:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise LDAMArgumentError(argument, f"expected a tensor [neurons, chains, *sample], got {got}")
    extra = samples.dim() - 2
    if extra == 2:
        return samples[:, :, None]
    if extra == 3:
        return samples
    flat = samples.flatten(2)  # a vector (or a volume, flattened)
    d = flat.shape[-1]
    if d <= MAX_STRIP:
        return flat[:, :, None, None, :]
    w = math.ceil(math.sqrt(d))
    h = math.ceil(d / w)
    return F.pad(flat.float(), (0, h * w - d), value=float("nan")).view(*flat.shape[:2], 1, h, w)


def _to_unit(images: torch.Tensor, value_range: Tuple[float, float]) -> torch.Tensor:
    lo, hi = value_range
    return ((images.float() - lo) / (hi - lo)).clamp_(0, 1)


def _tiles(x: torch.Tensor, factor: int) -> torch.Tensor:
    """``[N, C, H, W]`` -> 3-channel, upscaled tiles (NaN, the cells past a vector's end, grey)."""
    x = x.nan_to_num(_GREY)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        x = x[:, :3] if x.shape[1] > 3 else torch.cat([x, x[:, -1:].expand(-1, 3 - x.shape[1], -1, -1)], 1)
    return F.interpolate(x, scale_factor=factor, mode="nearest") if factor > 1 else x


def _fit_factor(best: int, floor: int, width_of: Callable[[int], int]) -> int:
    """The largest factor in ``[floor, best]`` whose sheet is at most :data:`MAX_WIDTH` wide, else ``floor``."""
    floor = max(1, min(best, floor))
    return next((f for f in range(best, floor - 1, -1) if width_of(f) <= MAX_WIDTH), floor)


def _check_upscale(upscale) -> Optional[int]:
    return None if upscale is None else check_positive("upscale", upscale, integer=True)


def _check_texts(argument: str, texts, count: int, noun: str) -> Optional[List[str]]:
    """``texts`` as ``count`` strings cut to :data:`MAX_LABEL` characters; ``None`` stays ``None``."""
    if texts is None:
        return None
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise LDAMArgumentError(argument, f"expected a list of strings, one per {noun}, got {texts!r}")
    if len(texts) != count:
        raise LDAMArgumentError(argument, f"expected {count} strings, one per {noun}, got {len(texts)}")
    return [_shorten(t, MAX_LABEL) for t in texts]


def _shorten(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= limit else text[:limit - 1] + _ELLIPSIS


@functools.lru_cache(maxsize=None)
def _font(size: int = _FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except TypeError:  # older Pillow: its fixed bitmap font, about 11 px high
        return ImageFont.load_default()


class _Type(NamedTuple):
    """Text of one size: its font, the height of a line and the widths of strings."""

    size: int = _FONT_SIZE

    @classmethod
    def for_width(cls, width: int) -> "_Type":
        """Text that still shows ``_FONT_SIZE`` px high once TensorBoard draws the sheet ``_CARD`` px wide."""
        return cls(min(_MAX_FONT_SIZE, max(_FONT_SIZE, math.ceil(_FONT_SIZE * width / _CARD))))

    @property
    def font(self):
        return _font(self.size)

    @property
    def line(self) -> int:
        return self.size + 2

    def width(self, text: str) -> int:
        return math.ceil(self.font.getlength(text))

    def margin(self, texts: Optional[List[str]]) -> int:
        """Width of a left margin column for ``texts`` (0 without)."""
        return 0 if texts is None else max((self.width(t) for t in texts), default=0) + 2 * _TEXT_PAD


def _fit(text: str, width: int, font) -> str:
    """``text`` ellipsised until it is at most ``width`` px wide (``""`` if not even one letter fits)."""
    if font.getlength(text) <= width:
        return text
    for end in range(len(text) - 1, 0, -1):
        cut = text[:end].rstrip() + _ELLIPSIS
        if font.getlength(cut) <= width:
            return cut
    return ""


class _Sheet:
    """A light canvas with grey-framed blocks of tiles and text boxes on it, painted by :meth:`render`."""

    def __init__(self, width: int, height: int, type_: _Type):
        self.width, self.height, self.type = width, height, type_
        self._blocks: List[Tuple[int, int, torch.Tensor]] = []
        self._texts: List[Tuple[int, int, int, int, str, bool]] = []

    def tiles(self, x: int, y: int, tiles: torch.Tensor) -> None:
        """Tiles ``[rows, cols, 3, h, w]`` framed by ``_PAD`` grey pixels, the frame's top left at ``(x, y)``."""
        self._blocks.append((x, y, tiles))

    def text(self, x: int, y: int, width: int, height: int, text: str, center: bool = False) -> None:
        """``text`` in the box, vertically centred, left-aligned or centred; ellipsised to the box's width."""
        self._texts.append((x, y, width, height, text, center))

    def render(self) -> torch.Tensor:
        """The sheet: ``[3, height, width]`` floats in [0, 1]."""
        canvas = self._text_layer().expand(3, -1, -1).clone()
        for x, y, tiles in self._blocks:
            rows, cols, _, h, w = tiles.shape
            canvas[:, y:y + rows * (h + _PAD) + _PAD, x:x + cols * (w + _PAD) + _PAD] = _GREY
            for r in range(rows):
                for c in range(cols):
                    top, left = y + _PAD + r * (h + _PAD), x + _PAD + c * (w + _PAD)
                    canvas[:, top:top + h, left:left + w] = tiles[r, c]
        return canvas

    def _text_layer(self) -> torch.Tensor:
        image = Image.new("L", (self.width, self.height), round(255 * _BAND))
        font, draw = self.type.font, ImageDraw.Draw(image)
        _, top, _, bottom = draw.textbbox((0, 0), "Hg", font=font)  # one baseline for all texts of a height
        for x, y, width, height, text, center in self._texts:
            text = _fit(text, width, font)
            if not text:
                continue
            left, _, right, _ = draw.textbbox((0, 0), text, font=font)
            dx = x - left + ((width - (right - left)) // 2 if center else 0)
            draw.text((dx, y - top + (height - (bottom - top)) // 2), text, fill=round(255 * _INK), font=font)
        return pil_to_tensor(image).float().div_(255)


@torch.no_grad()
def neuron_grid(images: torch.Tensor, value_range: Tuple[float, float], upscale: Optional[int] = None,
                row_labels: Optional[Sequence[str]] = None, title: Optional[str] = None) -> torch.Tensor:
    """One variant's samples as a sheet: a row per neuron, a column per chain.

    Args:
        images: ``[n, chains, C, H, W]`` (or ``[n, chains, H, W]``: grey; ``[n, chains, D]``: 1 × D strips up to
            :data:`MAX_STRIP` values, else near-square tiles).
        value_range: the samples' box ``(lo, hi)``: ``lo`` is black, ``hi`` white, the same for every tile.
        upscale: nearest-neighbour factor. Default: tiles at least 56 px high (strips at most 1024 px wide),
            reduced (to no less than 28 px) while the sheet would be wider than :data:`MAX_WIDTH`.
        row_labels: one string per neuron (e.g. ``"7: seven"``, ``"conv1:3"``), cut to :data:`MAX_LABEL`
            characters and drawn in a left margin, vertically centred on the row.
        title: a line drawn in a band on top (the sheet is widened to fit it, up to :data:`MAX_WIDTH`).

    Text is 12 px high on a sheet up to 350 px wide (TensorBoard's card), larger on a wider one (up to 24 px),
    so that it shows about 12 px high in the card.

    Returns:
        A float ``[3, H', W']`` image in [0, 1]. Without labels or title it is what
        ``torchvision.utils.make_grid(tiles, nrow=chains, padding=2, pad_value=0.5)`` makes of two tiles or more;
        labels and title add a light margin on the left and a band on top, the tiles unchanged.

    Example::

        >>> images = torch.rand(3, 4, 1, 28, 28)  # 3 neurons, 4 chains
        >>> neuron_grid(images, (0.0, 1.0)).shape  # 28 px upscaled x2: 58 px a tile
        torch.Size([3, 176, 234])
        >>> labelled = neuron_grid(images, (0.0, 1.0), row_labels=["0: zero", "1: one", "2: two"])
        >>> torch.equal(labelled[:, :, -234:], neuron_grid(images, (0.0, 1.0)))  # the same tiles, labels on the left
        True
    """
    images = _as_images(images)
    n, c, _, h, w = images.shape
    value_range = check_value_range(value_range)
    upscale = _check_upscale(upscale)
    labels = _check_texts("row_labels", row_labels, n, "neuron row")
    if title is not None and not isinstance(title, str):
        raise LDAMArgumentError("title", f"expected a string or None, got {title!r}")
    best = max(1, min(upscale_factor(h), 1024 // w))

    def layout(type_: _Type) -> Tuple[int, int, int, int]:  # left margin, top band, factor, width
        left, top = type_.margin(labels), 0 if title is None else type_.line + _TEXT_PAD
        factor = upscale if upscale is not None else _fit_factor(
            best, upscale_factor(h, _MIN_TILE), lambda f: left + c * (w * f + _PAD) + _PAD)
        width = left + c * (w * factor + _PAD) + _PAD
        if title is not None:
            width = max(width, min(MAX_WIDTH, type_.width(title) + 2 * _TEXT_PAD))
        return left, top, factor, width

    type_ = _Type.for_width(layout(_Type())[-1])
    left, top, factor, width = layout(type_)
    tiles = _tiles(_to_unit(images.flatten(0, 1), value_range), factor)
    th, tw = tiles.shape[-2:]
    sheet = _Sheet(width, top + n * (th + _PAD) + _PAD, type_)
    sheet.tiles(left, top, tiles.view(n, c, 3, th, tw))
    if title is not None:
        sheet.text(_TEXT_PAD, _TEXT_PAD // 2, width - 2 * _TEXT_PAD, type_.line, title)
    for i, label in enumerate(labels or []):
        sheet.text(_TEXT_PAD, top + i * (th + _PAD), left - 2 * _TEXT_PAD, th + 2 * _PAD, label)
    return sheet.render()


class _Columns(NamedTuple):
    """Where a comparison sheet's column blocks go: each block's tile-grid x and header slot (x, width)."""

    grid_x: List[int]
    slots: List[Tuple[int, int]]
    width: int


def _columns(left: int, counts: Sequence[int], headers: Optional[Sequence[Tuple[str, str]]], tile_w: int,
             type_: _Type) -> _Columns:
    """Blocks of ``counts`` tile columns from ``left`` on, ``_GAP`` apart, each widened to fit its header."""
    grid_x, slots, x = [], [], left
    for i, count in enumerate(counts):
        grid = count * (tile_w + _PAD) + _PAD
        text = 0 if headers is None else max(type_.width(line) for line in headers[i]) + _TEXT_PAD
        slot = max(grid, text)
        grid_x.append(x + (slot - grid) // 2)
        slots.append((x, slot))
        x += slot + _GAP
    return _Columns(grid_x, slots, x - _GAP)


def _compare_tiles(variants: List[torch.Tensor], value_range: Tuple[float, float], shown: int,
                   factor: int) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Tiles ``[n, lines, cols, 3, h, w]`` of the chains, the means and the mean differences from variant 0."""
    lo, hi = value_range

    def tiles(x: torch.Tensor) -> torch.Tensor:  # [n, lines, cols, C, H, W] in [0, 1]
        out = _tiles(x.flatten(0, 2), factor)
        return out.view(*x.shape[:3], *out.shape[1:])

    chains = tiles(_to_unit(torch.stack([s[:, :shown] for s in variants], 1), value_range))
    means = torch.stack([s.float().mean(1) for s in variants], 1)  # [n, v, C, H, W], over every chain
    diffs = None
    if len(variants) > 1:  # half the box is white: averaging moves means by a small part of the range
        diffs = tiles(((means[:, 1:] - means[:, :1]).abs() / (0.5 * (hi - lo))).clamp_(0, 1)[:, :, None])
    return chains, tiles(_to_unit(means, value_range)[:, :, None]), diffs


def _compare_headers(first: str, shown: int, chains: int) -> List[Tuple[str, str]]:
    """Two header lines over the chains, the mean and the difference columns."""
    return [("chains", f"{shown} of {chains}"), ("mean", f"of {chains}"), ("|diff|", _shorten(f"vs {first}", 10))]


def _check_variants(variants) -> List[torch.Tensor]:
    if isinstance(variants, torch.Tensor) or not isinstance(variants, Sequence) or not variants:
        raise LDAMArgumentError("variants", f"expected a non-empty list of tensors [neurons, chains, *sample], "
                                            f"got {type(variants).__name__}")
    out = [_as_images(v, "variants") for v in variants]
    shapes = [tuple(v.shape) for v in out]
    if len(set(shapes)) > 1:
        raise LDAMArgumentError("variants", f"expected tensors of one shape (the same neurons, chains and "
                                            f"sample shape), got shapes {shapes}")
    return out


def _score_texts(scores, n: int, v: int) -> Optional[List[List[str]]]:
    """``scores`` (``[n][v]`` floats or ``None``) as two-decimal strings: ``""`` for ``None`` (no score on that
    line), ``"-"`` for NaN (a score that could not be measured)."""
    if scores is None:
        return None
    if len(scores) != n or any(len(row) != v for row in scores):
        raise LDAMArgumentError("scores", f"expected {n} rows (one per neuron) of {v} values (one per variant), got "
                                          f"{[len(row) for row in scores]}")
    return [["" if s is None else "-" if not math.isfinite(float(s)) else f"{float(s):.2f}" for s in row]
            for row in scores]


class _GroupTexts(NamedTuple):
    """The words of one neuron's lines on a comparison sheet."""

    label: Optional[str]  # the neuron's row label
    names: Optional[List[str]]  # each line's variant name
    label_w: int  # the label column's width
    scores: Optional[List[str]]  # each line's scores
    score_slot: Tuple[int, int]  # the scores' column: x and width


def _paint_group(sheet: _Sheet, cols: _Columns, y: int, tiles: Sequence[Optional[torch.Tensor]],
                 texts: _GroupTexts) -> None:
    """One neuron's lines from ``y`` down: the label, each line's name, the chains, means, differences and
    scores."""
    chains, means, diffs = tiles
    assert chains is not None and means is not None  # every line has them (the first one no differences)
    label, names, label_w, scores, score_slot = texts
    h = chains.shape[-2]
    for v, text in enumerate(scores or []):
        sheet.text(score_slot[0], y + v * (h + _PAD), score_slot[1], h + 2 * _PAD, text, center=True)
    sheet.tiles(cols.grid_x[0], y, chains)
    sheet.tiles(cols.grid_x[1], y, means)
    if diffs is not None:  # the first variant's line has none
        sheet.tiles(cols.grid_x[2], y + h + _PAD, diffs)
    if label is not None:
        sheet.text(_TEXT_PAD, y, label_w - 2 * _TEXT_PAD, len(chains) * (h + _PAD) + _PAD, label)
    name_w = sheet.type.margin(names)
    for v, name in enumerate(names or []):
        sheet.text(label_w + _TEXT_PAD, y + v * (h + _PAD), name_w - 2 * _TEXT_PAD, h + 2 * _PAD, name)


@torch.no_grad()
def compare_grid(variants: Sequence[torch.Tensor], value_range: Tuple[float, float],
                 upscale: Optional[int] = None, names: Optional[Sequence[str]] = None,
                 row_labels: Optional[Sequence[str]] = None, max_chains: Optional[int] = None,
                 scores: Optional[Sequence[Sequence[Optional[float]]]] = None,
                 score_header: Tuple[str, str] = ("transfer", "")) -> torch.Tensor:
    """Variants of the same neurons and chains, one above the other: a group of lines per neuron.

    Per neuron, a group of one line per variant (in the given order; 6 light pixels between groups).
    Columns, left to right:

    * **row label** (with ``row_labels``): the neuron's label, centred on its group;
    * **name** (with ``names``): the variant of each line;
    * **chains**: the first ``max_chains`` chains of the variant, one per column. The sampler starts a neuron's
      chains from the same seeds in every variant, so a column shows one seed under each variant's weights;
    * **mean**: the mean image over *all* the variant's chains (not only those shown);
    * **|diff|** (on every line but the first variant's): ``|mean(variant) - mean(first variant)|``, per pixel
      and channel, scaled so that a difference of half the box is white (black: averaging changed nothing);
    * **score** (with ``scores``): one number per line, e.g. the neuron's transfer with raw
      (:func:`lightning_ldam.report.metrics.transfer`), two decimals; blank for ``None``, ``-`` for NaN.

    With ``names``, a header band on top labels the columns: ``chains`` ``k of n``, ``mean`` ``of n``,
    ``|diff|`` ``vs <first name>``. Tiles, means and differences use the one fixed scaling of ``value_range``.
    Text is sized as in :func:`neuron_grid`. With the defaults (``max_chains`` and ``upscale`` not given) the sheet
    fits TensorBoard's 350-px card (:data:`CARD_WIDTH`): a sheet that would be wider shows fewer chains, down to
    :data:`MIN_FIT_CHAINS`, then area-shrunk tiles, down to :data:`MIN_FIT_TILE` px high (64-px images: 2 chains,
    tiles of about 38 px), since the card would shrink it anyway, text included. The neuron sheets
    (:func:`neuron_grid`) keep every chain at full size.

    Args:
        variants: ``[n, chains, *sample]`` per variant (e.g. raw, ema), the same neurons and seeds.
        value_range: the samples' box ``(lo, hi)``.
        upscale: nearest-neighbour factor. Default: tiles at least 28 px high (strips at most 1024 px wide),
            reduced (to no less than 14 px) while the sheet would be wider than :data:`MAX_WIDTH`, then fitted to
            the card as above; given, the sheet is not fitted.
        names: one name per variant (e.g. ``["raw", "ema"]``), cut to :data:`MAX_LABEL` characters; also
            turns on the header band.
        row_labels: one string per neuron, cut to :data:`MAX_LABEL` characters.
        max_chains: chains shown per variant (default :data:`MAX_CHAINS`, fewer where the sheet would not fit the
            card); given, it is kept whatever the width.
        scores: ``[n][variants]`` numbers (or ``None``) drawn in a last column.
        score_header: the two header lines of that column.

    Returns:
        A float ``[3, H, W]`` image in [0, 1].

    Example::

        >>> raw, ema = torch.rand(8, 6, 1, 28, 28), torch.rand(8, 6, 1, 28, 28)  # 8 neurons, 6 chains
        >>> sheet = compare_grid([raw, ema], (0.0, 1.0), names=["raw", "ema"], row_labels=[str(i) for i in range(8)])
        >>> sheet.shape[1]  # a 32-px header, then 8 groups of 2 lines of 30 px (+ 2), 6 px apart
        570
        >>> sheet.shape[-1] <= MAX_WIDTH  # labels, 4 chains, the mean and the difference
        True
    """
    variants = _check_variants(variants)
    n, c = variants[0].shape[:2]
    value_range = check_value_range(value_range)
    upscale = _check_upscale(upscale)
    names = _check_texts("names", names, len(variants), "variant")
    labels = _check_texts("row_labels", row_labels, n, "neuron row")
    shown = min(c, MAX_CHAINS if max_chains is None else check_positive("max_chains", max_chains, integer=True))
    score_texts = _score_texts(scores, n, len(variants))

    def draw(images: List[torch.Tensor], k: int) -> torch.Tensor:
        return _compare_sheet(images, value_range, upscale, names, labels, k, score_texts, score_header)

    sheet = draw(variants, shown)
    if max_chains is not None or upscale is not None or sheet.shape[-1] <= _CARD:
        return sheet
    # wider than the card: fewer chain columns first (down to MIN_FIT_CHAINS), then smaller tiles (down to
    # MIN_FIT_TILE px, area-averaged); the neuron sheets keep every chain at full size
    while sheet.shape[-1] > _CARD and shown > min(c, MIN_FIT_CHAINS):
        shown -= 1
        sheet = draw(variants, shown)
    side = variants[0].shape[-2]
    if sheet.shape[-1] <= _CARD or variants[0].dim() != 5 or side <= MIN_FIT_TILE:
        return sheet
    lo, hi, best = MIN_FIT_TILE, side - 1, None
    while lo <= hi:  # the largest tile side whose sheet fits: the width grows with the side
        mid = (lo + hi) // 2
        candidate = draw([_shrink(v, mid) for v in variants], shown)
        if candidate.shape[-1] <= _CARD:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best if best is not None else draw([_shrink(v, MIN_FIT_TILE) for v in variants], shown)


def _shrink(images: torch.Tensor, side: int) -> torch.Tensor:
    """``[n, chains, C, H, W]`` area-resized so that ``H`` becomes ``side`` (the aspect ratio kept)."""
    n, c, ch, h, w = images.shape
    size = (side, max(1, round(w * side / h)))
    return F.interpolate(images.reshape(n * c, ch, h, w).float(), size=size, mode="area").view(n, c, ch, *size)


def _compare_sheet(variants: List[torch.Tensor], value_range: Tuple[float, float], upscale: Optional[int],
                   names: Optional[List[str]], labels: Optional[List[str]], shown: int,
                   score_texts: Optional[List[List[str]]], score_header: Tuple[str, str]) -> torch.Tensor:
    """:func:`compare_grid`'s sheet for checked arguments and ``shown`` chain columns."""
    n, c, _, h, w = variants[0].shape
    headers = None if names is None else _compare_headers(names[0], shown, c)[:2 + (len(variants) > 1)]
    counts = [shown, 1, 1][:2 + (len(variants) > 1)]
    best = max(1, min(upscale_factor(h, _MIN_TILE), 1024 // w))

    def score_width(type_: _Type) -> int:
        if score_texts is None:
            return 0
        lines = [*score_header, *(t for row in score_texts for t in row)]
        return _GAP + max(type_.width(line) for line in lines) + _TEXT_PAD

    def layout(type_: _Type) -> Tuple[int, _Columns]:  # the tile factor and where the columns go
        left, extra = type_.margin(labels) + type_.margin(names), score_width(type_)
        factor = upscale if upscale is not None else _fit_factor(
            best, upscale_factor(h, _Type().line),
            lambda f: _columns(left, counts, headers, w * f, type_).width + extra)
        cols = _columns(left, counts, headers, w * factor, type_)
        return factor, cols._replace(width=cols.width + extra)

    type_ = _Type.for_width(layout(_Type())[1].width)
    factor, cols = layout(type_)
    score_slot = (cols.width - score_width(type_) + _GAP, score_width(type_) - _GAP)
    if score_texts is not None and headers is not None:
        headers, cols = [*headers, score_header], cols._replace(slots=[*cols.slots, score_slot])
    chains, means, diffs = _compare_tiles(variants, value_range, shown, factor)
    top = 0 if headers is None else 2 * type_.line + _TEXT_PAD
    group = len(variants) * (chains.shape[-2] + _PAD) + _PAD  # the lines of one neuron
    sheet = _Sheet(cols.width, top + n * (group + _GAP) - _GAP, type_)
    for (x, width), lines in zip(cols.slots, headers or []):
        for k, line in enumerate(lines):
            sheet.text(x, _TEXT_PAD // 2 + k * type_.line, width, type_.line, line, center=True)
    label_w = type_.margin(labels)
    for i in range(n):
        texts = _GroupTexts(None if labels is None else labels[i], names, label_w,
                            None if score_texts is None else score_texts[i], score_slot)
        _paint_group(sheet, cols, top + i * (group + _GAP), [chains[i], means[i], None if diffs is None else diffs[i]],
                     texts)
    return sheet.render()
