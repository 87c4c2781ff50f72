"""Image sheets for TensorBoard: shapes, one fixed value scaling, labels, and widths a TensorBoard card can show."""
import doctest

import pytest
import torch

from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report import render
from lightning_ldam.report.render import MAX_LABEL, MAX_WIDTH, compare_grid, neuron_grid, upscale_factor

PAD = 2
GAP = 6  # light gutter between a comparison sheet's column blocks and neuron groups
BAND = render._BAND  # the light background of margins, header bands and gutters (about 0.95)
HEADER = 32  # a comparison sheet's two-line header band (with names)
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


@pytest.mark.parametrize("height, factor", [(12, 5), (28, 2), (56, 1), (100, 1), (1, 56)])
def test_upscale_factor_makes_tiles_at_least_56_px(height, factor):
    assert upscale_factor(height) == factor
    assert height * factor >= 56 and height * (factor - 1) < 56


@pytest.mark.parametrize("n, chains, upscale, tile", [(3, 4, None, 60), (1, 2, 1, 12), (2, 3, 2, 24)])
def test_neuron_grid_has_a_row_per_neuron_and_a_column_per_chain(n, chains, upscale, tile):
    grid = neuron_grid(torch.rand(n, chains, 1, 12, 12), (0.0, 1.0), upscale)
    assert grid.shape == (3, n * (tile + PAD) + PAD, chains * (tile + PAD) + PAD)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_any_channel_count_gives_rgb(channels):
    grid = neuron_grid(torch.rand(2, 2, channels, 5, 5), (0.0, 1.0), 1)
    assert grid.shape == (3, 2 * 7 + 2, 2 * 7 + 2)


def _tile(grid, row, col, tile, top=0, left=0):
    top, left = top + PAD + row * (tile + PAD), left + PAD + col * (tile + PAD)
    return grid[:, top:top + tile, left:left + tile]


def test_fixed_scaling_without_per_image_normalisation():
    images = torch.stack([torch.full((2, 1, 4, 4), 0.25), torch.full((2, 1, 4, 4), 0.75)])  # [2, 2, 1, 4, 4]
    images[1, 1] = 0.5
    grid = neuron_grid(images, (0.0, 1.0), 1)
    assert torch.equal(_tile(grid, 0, 0, 4), torch.full((3, 4, 4), 0.25))
    assert torch.equal(_tile(grid, 0, 1, 4), torch.full((3, 4, 4), 0.25))
    assert torch.equal(_tile(grid, 1, 0, 4), torch.full((3, 4, 4), 0.75))
    assert torch.equal(_tile(grid, 1, 1, 4), torch.full((3, 4, 4), 0.5))
    assert grid[:, 0].eq(0.5).all()  # padding


@pytest.mark.parametrize("value_range, value, expected", [
    ((0.0, 1.0), 0.25, 0.25), ((-1.0, 1.0), 0.0, 0.5), ((0.0, 255.0), 51.0, 0.2), ((0.0, 1.0), 3.0, 1.0),
    ((0.0, 1.0), -1.0, 0.0),
])
def test_value_range_maps_to_unit_interval(value_range, value, expected):
    grid = neuron_grid(torch.full((1, 2, 1, 3, 3), value), value_range, 1)
    for col in range(2):
        torch.testing.assert_close(_tile(grid, 0, col, 3), torch.full((3, 3, 3), expected))


def test_upscale_is_nearest_neighbour():
    img = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).view(1, 1, 1, 2, 2).expand(1, 2, 1, 2, 2)
    tile = _tile(neuron_grid(img, (0.0, 1.0), 3), 0, 1, 6)[0]
    expected = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).repeat_interleave(3, 0).repeat_interleave(3, 1)
    assert torch.equal(tile, expected)


def test_inputs_are_not_modified():
    images = torch.rand(2, 3, 1, 4, 4) * 4 - 2
    keep = images.clone()
    neuron_grid(images, (-1.0, 1.0), row_labels=["a", "b"], title="t")
    compare_grid([images, images], (-1.0, 1.0), names=["raw", "ema"], row_labels=["a", "b"])
    assert torch.equal(images, keep)


# ---- the comparison sheet ------------------------------------------------------------------------------------
def _compare_tile(grid, neuron, line, x, tile, lines=2, top=0):
    """The tile of ``neuron`` on variant ``line`` in the column whose grey frame starts at ``x``."""
    group = lines * (tile + PAD) + PAD
    return _tile(grid, line, 0, tile, top=top + neuron * (group + GAP), left=x)


def test_compare_grid_layout_and_values():
    n, c, tile = 2, 3, 4
    raw = torch.full((n, c, 1, tile, tile), 0.25)
    ema = torch.zeros(n, c, 1, tile, tile)
    ema[:, 1:] = 1.0  # chains 0, 1, 1: mean 2/3
    grid = compare_grid([raw, ema], (0.0, 1.0), 1)
    chains_w, column_w = c * (tile + PAD) + PAD, tile + 2 * PAD
    mean_x, diff_x = chains_w + GAP, chains_w + GAP + column_w + GAP
    group = 2 * (tile + PAD) + PAD  # a line per variant
    assert grid.shape == (3, n * group + (n - 1) * GAP, diff_x + column_w)
    for neuron in range(n):
        for col in range(c):
            raw_chain, ema_chain = (_compare_tile(grid, neuron, line, col * (tile + PAD), tile) for line in (0, 1))
            assert torch.equal(raw_chain, torch.full((3, tile, tile), 0.25))
            assert torch.equal(ema_chain, torch.full((3, tile, tile), 0.0 if col == 0 else 1.0))
        torch.testing.assert_close(_compare_tile(grid, neuron, 0, mean_x, tile), torch.full((3, tile, tile), 0.25))
        torch.testing.assert_close(_compare_tile(grid, neuron, 1, mean_x, tile), torch.full((3, tile, tile), 2 / 3))
        diff = (2 / 3 - 0.25) / 0.5  # |mean(ema) - mean(raw)|, half the box is white
        torch.testing.assert_close(_compare_tile(grid, neuron, 1, diff_x, tile), torch.full((3, tile, tile), diff))
        first_line = _compare_tile(grid, neuron, 0, diff_x, tile)
        assert first_line.allclose(torch.tensor(BAND))  # the first variant has no difference
    assert grid[:, :, chains_w:chains_w + GAP].allclose(torch.tensor(BAND))  # the gutter between chains and means
    assert grid[:, group:group + GAP].allclose(torch.tensor(BAND))  # the gutter between neuron groups


def test_difference_map_is_zero_for_identical_variants_and_known_otherwise():
    g = torch.Generator().manual_seed(0)
    raw = torch.rand(3, 5, 1, 6, 6, generator=g) * 2 - 1
    diff_x = 4 * (6 + PAD) + PAD + GAP + (6 + 2 * PAD) + GAP  # chains (4 of 5 shown), gutter, mean, gutter
    same = compare_grid([raw, raw.clone(), raw.clone()], (-1.0, 1.0), 1)
    for neuron in range(3):
        for line in (1, 2):
            assert torch.equal(_compare_tile(same, neuron, line, diff_x, 6, lines=3), torch.zeros(3, 6, 6))
    shifted = compare_grid([raw, raw + 0.25, raw - 0.5], (-1.0, 1.0), 1)  # box (-1, 1): half the box is 1.0
    for neuron in range(3):
        for line, expected in ((1, 0.25), (2, 0.5)):
            torch.testing.assert_close(_compare_tile(shifted, neuron, line, diff_x, 6, lines=3),
                                       torch.full((3, 6, 6), expected))


def test_max_chains_shows_the_first_chains_and_the_mean_uses_them_all():
    images = torch.zeros(1, 6, 1, 4, 4)
    images[:, 2:] = 1.0  # chains 0, 0, 1, 1, 1, 1: the first two are black, the mean over all six is 2/3
    grid = compare_grid([images, images], (0.0, 1.0), 1, max_chains=2)
    mean_x = 2 * (4 + PAD) + PAD + GAP
    assert grid.shape[-1] == mean_x + 2 * (4 + 2 * PAD) + GAP
    assert torch.equal(_compare_tile(grid, 0, 0, 4 + PAD, 4), torch.zeros(3, 4, 4))
    torch.testing.assert_close(_compare_tile(grid, 0, 1, mean_x, 4), torch.full((3, 4, 4), 2 / 3))
    default = compare_grid([images, images], (0.0, 1.0), 1)  # MAX_CHAINS (4) of the 6
    assert default.shape[-1] == grid.shape[-1] + 2 * (4 + PAD)


def test_one_variant_has_no_difference_column():
    grid = compare_grid([torch.rand(2, 3, 1, 4, 4)], (0.0, 1.0), 1, names=["raw"])
    assert grid.shape[1] == HEADER + 2 * (4 + 2 * PAD) + GAP


def test_compare_grid_default_tiles_are_at_least_28_px_and_not_upscaled_beyond():
    small = compare_grid([torch.rand(1, 2, 1, 12, 12)] * 2, (0.0, 1.0))  # 12 px x 3
    assert small.shape[1] == 2 * (36 + PAD) + PAD
    mnist = compare_grid([torch.rand(1, 2, 1, 28, 28)] * 2, (0.0, 1.0))
    assert mnist.shape[1] == 2 * (28 + PAD) + PAD


# ---- labels --------------------------------------------------------------------------------------------------
def _has_text(region):
    """Dark ink on the light band: some pixels well below the band, the rest of the region band-coloured."""
    return bool(region.min() < 0.4) and bool(region.isclose(torch.tensor(BAND)).float().mean() > 0.5)


def test_row_labels_add_a_left_margin_and_leave_the_tiles_unchanged():
    images = torch.rand(3, 4, 1, 12, 12)
    labels = [f"{i}: {WORDS[i]}" for i in range(3)]
    plain, labelled = neuron_grid(images, (0.0, 1.0)), neuron_grid(images, (0.0, 1.0), row_labels=labels)
    margin = labelled.shape[-1] - plain.shape[-1]
    assert labelled.shape[1] == plain.shape[1] and 20 < margin < 120
    assert torch.equal(labelled[:, :, margin:], plain)
    for row in range(3):
        assert _has_text(labelled[:, PAD + row * 62:PAD + row * 62 + 60, :margin]), row
    pair = [images, images.flip(-1)]
    plain, labelled = compare_grid(pair, (0.0, 1.0)), compare_grid(pair, (0.0, 1.0), row_labels=labels)
    margin = labelled.shape[-1] - plain.shape[-1]
    assert margin > 20 and torch.equal(labelled[:, :, margin:], plain) and _has_text(labelled[:, :, :margin])


def test_names_add_a_header_band_and_a_name_column_and_leave_the_tiles_unchanged():
    pair = [torch.rand(2, 3, 1, 40, 40), torch.rand(2, 3, 1, 40, 40)]  # columns wider than their headers
    plain = compare_grid(pair, (0.0, 1.0))
    named = compare_grid(pair, (0.0, 1.0), names=["raw", "ema"], row_labels=["0: zero", "1: one"])
    left = named.shape[-1] - plain.shape[-1]
    assert named.shape[1] == plain.shape[1] + HEADER and left > 40
    assert torch.equal(named[:, HEADER:, left:], plain)
    assert _has_text(named[:, :HEADER, left:])  # chains, mean, |diff| headers
    assert _has_text(named[:, HEADER:, :left])  # row labels and variant names
    assert float(named[:, :HEADER, left:].min()) < 0.2  # dark on light: legible


def test_title_adds_a_band_on_top_and_widens_a_narrow_sheet_to_fit():
    images = torch.rand(2, 2, 1, 4, 4)
    plain = neuron_grid(images, (0.0, 1.0), 1)
    titled = neuron_grid(images, (0.0, 1.0), 1, title="ema net.classifier.4")
    band = titled.shape[1] - plain.shape[1]
    assert band >= 14 and titled.shape[-1] > plain.shape[-1]
    assert torch.equal(titled[:, band:, :plain.shape[-1]], plain) and _has_text(titled[:, :band])


def test_labels_longer_than_the_limit_are_cut_with_an_ellipsis():
    long = "classifier.4:7 seven, the long way"
    assert render._shorten(long, MAX_LABEL) == "classifier.4:7 …" and MAX_LABEL == 16
    assert render._shorten("7: seven", MAX_LABEL) == "7: seven"
    images = torch.rand(1, 2, 1, 12, 12)
    cut = neuron_grid(images, (0.0, 1.0), row_labels=[long[:15] + "…"])
    assert torch.equal(neuron_grid(images, (0.0, 1.0), row_labels=[long]), cut)
    assert torch.equal(compare_grid([images] * 2, (0.0, 1.0), names=[long, "ema"]),
                       compare_grid([images] * 2, (0.0, 1.0), names=[long[:15] + "…", "ema"]))


def test_text_is_ellipsised_to_its_box():
    font = render._font()
    assert render._fit("short", 200, font) == "short"
    fitted = render._fit("a header much wider than its column", 40, font)
    assert fitted.endswith("…") and font.getlength(fitted) <= 40
    assert render._fit("wide", 1, font) == ""


# ---- widths a TensorBoard card can show ------------------------------------------------------------------
CARD = render._CARD  # TensorBoard draws every image this wide (350 px) in its cards


@pytest.mark.parametrize("sample, chains, variants", [
    ((1, 28, 28), 6, 2), ((1, 28, 28), 8, 2), ((1, 28, 28), 6, 3), ((1, 28, 28), 8, 3), ((28, 28), 8, 3),
    ((3, 32, 32), 6, 2), ((3, 32, 32), 8, 3), ((1, 12, 12), 2, 2),
])
@pytest.mark.parametrize("labels", ["short", "long"])
def test_compare_sheets_of_typical_inputs_fit_a_tensorboard_card(sample, chains, variants, labels):
    n = 8
    row_labels = [f"{i}: {WORDS[i]}" if labels == "short" else f"features.{i}:{i} of a long name" for i in range(n)]
    sheet = compare_grid([torch.rand(n, chains, *sample) for _ in range(variants)], (0.0, 1.0),
                         names=["raw", "ema", "swa"][:variants], row_labels=row_labels)
    # drawn at least 1:1 (12-px text stays 12 px), or shrunk a little (with its text enlarged to make up for it)
    assert MAX_WIDTH == 640 and sheet.shape[-1] <= (CARD if labels == "short" else 1.1 * CARD)
    assert sheet.dtype == torch.float32 and 0.0 <= float(sheet.min()) and float(sheet.max()) <= 1.0


@pytest.mark.parametrize("sample, chains", [((1, 28, 28), 6), ((1, 28, 28), 8), ((3, 32, 32), 8),
                                            ((1, 28, 28), 16), ((1, 12, 12), 8)])
def test_neuron_grids_of_typical_inputs_stay_under_the_width_cap(sample, chains):
    labels = [f"{i}: {WORDS[i]}" for i in range(8)]
    assert neuron_grid(torch.rand(8, chains, *sample), (0.0, 1.0), row_labels=labels).shape[-1] <= MAX_WIDTH


@pytest.mark.parametrize("width, size", [(100, 12), (350, 12), (351, 13), (525, 18), (640, 22), (5000, 24)])
def test_text_on_sheets_wider_than_the_card_is_drawn_larger(width, size):
    assert render._Type.for_width(width).size == size  # 12 px once the card shrinks the sheet, up to 24 px


def test_a_wide_sheet_gets_a_wider_label_margin_for_its_larger_text():
    labels = ["0: zero", "1: one"]
    narrow = neuron_grid(torch.rand(2, 2, 1, 28, 28), (0.0, 1.0), row_labels=labels)  # 2 chains: 12-px text
    wide = neuron_grid(torch.rand(2, 8, 1, 28, 28), (0.0, 1.0), row_labels=labels)  # 8 chains: 466 px of tiles
    narrow_margin, wide_margin = narrow.shape[-1] - 2 * 58 - PAD, wide.shape[-1] - 8 * 58 - PAD
    assert wide_margin > 1.2 * narrow_margin


def test_neuron_grid_keeps_56_px_tiles_while_narrow_and_shrinks_them_to_28_when_not():
    assert neuron_grid(torch.rand(1, 6, 1, 28, 28), (0.0, 1.0)).shape[-1] == 6 * (56 + PAD) + PAD  # the demo's
    assert neuron_grid(torch.rand(1, 16, 1, 28, 28), (0.0, 1.0)).shape[-1] == 16 * (28 + PAD) + PAD  # floor: 28
    assert neuron_grid(torch.rand(1, 16, 1, 28, 28), (0.0, 1.0), 2).shape[-1] == 16 * (56 + PAD) + PAD  # as asked


def test_non_image_inputs_are_drawn_as_strips_or_grey_images():
    vectors = torch.linspace(0, 1, 10).expand(2, 3, 10)  # 2 neurons x 3 chains x 10 features
    grid = neuron_grid(vectors, (0.0, 1.0))
    assert grid.shape == (3, 2 * (28 + 2) + 2, 3 * (10 * 28 + 2) + 2)  # 1 x 10 strips, 28 px high (width cap)
    first = grid[0, 2:30, 2:2 + 280]  # the first strip: left to right, 10 blocks of 28 px, dark to bright
    assert torch.allclose(first[:, ::28][0], torch.linspace(0, 1, 10))
    assert neuron_grid(vectors, (0.0, 1.0), 56).shape == (3, 2 * (56 + 2) + 2, 3 * (10 * 56 + 2) + 2)
    digits = torch.rand(1, 2, 784)  # a flattened 28 x 28 image: drawn as one again, row by row
    long = neuron_grid(digits, (0.0, 1.0), upscale=1)
    assert long.shape == (3, 28 + 4, 2 * (28 + 2) + 2)
    assert torch.allclose(long[0, 2:30, 2:30], digits[0, 0].view(28, 28))
    odd = neuron_grid(torch.ones(1, 1, 40), (0.0, 1.0), upscale=1)  # 40 values: 7 wide, 6 high, 2 cells grey
    tile = odd[0, 2:8, 2:9]
    assert tile.shape == (6, 7) and (tile.flatten()[:40] == 1).all() and (tile.flatten()[40:] == 0.5).all()
    assert compare_grid([digits, digits], (0.0, 1.0)).shape[0] == 3
    planes = neuron_grid(torch.rand(1, 2, 8, 8), (0.0, 1.0))
    assert planes.shape == (3, 56 + 4, 2 * (56 + 2) + 2)
    assert compare_grid([vectors, vectors], (0.0, 1.0)).shape[0] == 3


# ---- compatibility and bad arguments --------------------------------------------------------------------------
def test_positional_calls_of_before_still_work():
    images = torch.rand(2, 3, 1, 12, 12)
    assert neuron_grid(images, (0.0, 1.0), 2).shape == (3, 2 * 26 + 2, 3 * 26 + 2)
    assert compare_grid([images, images], (0.0, 1.0), 2).shape[1] == 2 * 26 + 2 + GAP + 2 * 26 + 2
    assert compare_grid((images, images), [0, 1], None).shape[0] == 3


@pytest.mark.parametrize("call, argument", [
    (lambda x: neuron_grid(x, (0.0, 1.0), row_labels=["a"]), r"^row_labels: expected 2 strings, one per neuron row"),
    (lambda x: neuron_grid(x, (0.0, 1.0), row_labels="ab"), r"^row_labels: expected a list of strings"),
    (lambda x: neuron_grid(x, (0.0, 1.0), row_labels=[1, 2]), r"^row_labels: expected a list of strings"),
    (lambda x: neuron_grid(x, (0.0, 1.0), title=3), r"^title: expected a string or None, got 3"),
    (lambda x: neuron_grid(x, (0.0, 1.0), 0), r"^upscale: expected a finite int > 0, got 0"),
    (lambda x: neuron_grid(x, (1.0, 1.0)), r"^value_range: expected \(lo, hi\) with lo < hi"),
    (lambda x: neuron_grid(x[0, 0, 0], (0.0, 1.0)), r"^images: expected a tensor \[neurons, chains, \*sample\]"),
    (lambda x: compare_grid([x, x], (0.0, 1.0), names=["raw"]), r"^names: expected 2 strings, one per variant"),
    (lambda x: compare_grid([x, x], (0.0, 1.0), max_chains=0), r"^max_chains: expected a finite int > 0, got 0"),
    (lambda x: compare_grid([x, x[:1]], (0.0, 1.0)), r"^variants: expected tensors of one shape"),
    (lambda x: compare_grid([], (0.0, 1.0)), r"^variants: expected a non-empty list"),
    (lambda x: compare_grid(x, (0.0, 1.0)), r"^variants: expected a non-empty list"),
])
def test_bad_arguments_name_themselves(call, argument):
    with pytest.raises(LDAMArgumentError, match=argument):
        call(torch.rand(2, 3, 1, 4, 4))


def test_docstring_examples():
    results = doctest.testmod(render, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert results.attempted > 0 and results.failed == 0


def test_compare_grid_draws_a_score_column_and_checks_its_shape():
    raw, ema = torch.rand(2, 4, 1, 28, 28), torch.rand(2, 4, 1, 28, 28)
    plain = compare_grid([raw, ema], (0.0, 1.0), 1, names=["raw", "ema"])
    scored = compare_grid([raw, ema], (0.0, 1.0), 1, names=["raw", "ema"], scores=[[None, 0.82], [None, float("nan")]])
    assert scored.shape[1] == plain.shape[1] and scored.shape[2] > plain.shape[2]  # a column on the right
    assert torch.equal(scored[:, :, :plain.shape[2] - 2], plain[:, :, :plain.shape[2] - 2])  # the rest unchanged
    column = scored[:, 32:, plain.shape[2]:]  # below the header band
    ink = column.min(0).values < 0.5
    first_line = ink[:30].any()  # raw's line: no score drawn
    assert not first_line and ink[30:62].any()  # ema's line: "0.82"
    with pytest.raises(LDAMArgumentError, match=r"^scores: expected 2 rows .* of 2 values"):
        compare_grid([raw, ema], (0.0, 1.0), scores=[[0.5, 0.5]])


# ---- sheets fit TensorBoard's card ----------------------------------------------------------------------------
@pytest.mark.parametrize("side", [64, 128, 224])
def test_compare_sheets_of_large_images_fit_the_card_with_fewer_chains_then_smaller_tiles(side):
    from lightning_ldam.report.render import CARD_WIDTH, MIN_FIT_CHAINS

    v = [torch.rand(3, 8, 3, side, side) for _ in range(2)]
    kw = dict(names=["raw", "swa"], row_labels=["0: airplane", "1: automobile", "2"], scores=[[None, 0.9]] * 3)
    sheet = compare_grid(v, (0.0, 1.0), **kw)
    assert sheet.shape[-1] <= CARD_WIDTH == 350
    wide = compare_grid(v, (0.0, 1.0), max_chains=4, **kw)  # an explicit max_chains is kept, whatever the width
    assert wide.shape[-1] > CARD_WIDTH
    # two chains at full size are still too wide, so the fitted sheet's tiles were shrunk: its height shows it
    two = compare_grid(v, (0.0, 1.0), max_chains=MIN_FIT_CHAINS, **kw)
    assert two.shape[-1] > CARD_WIDTH and sheet.shape[-2] < two.shape[-2]
    assert compare_grid(v, (0.0, 1.0), upscale=1, **kw).shape[-1] > CARD_WIDTH  # an explicit upscale: not fitted


def test_small_compare_sheets_keep_four_chains_and_full_size_tiles():
    v = [torch.rand(3, 8, 1, 28, 28) for _ in range(2)]
    sheet = compare_grid(v, (0.0, 1.0), names=["raw", "ema"])
    assert sheet.shape[-1] <= 350
    torch.testing.assert_close(sheet, compare_grid(v, (0.0, 1.0), names=["raw", "ema"], max_chains=4))
