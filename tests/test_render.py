"""Image grids for TensorBoard: shapes, one fixed value scaling, no per-image normalisation."""
import pytest
import torch

from lightning_ldam.render import compare_grid, neuron_grid, upscale_factor

PAD = 2


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


def _tile(grid, row, col, tile):
    top, left = PAD + row * (tile + PAD), PAD + col * (tile + PAD)
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
    neuron_grid(images, (-1.0, 1.0))
    compare_grid([images, images], (-1.0, 1.0))
    assert torch.equal(images, keep)


def test_compare_grid_layout_and_values():
    n, c, tile = 2, 3, 4
    raw = torch.full((n, c, 1, tile, tile), 0.25)
    ema = torch.zeros(n, c, 1, tile, tile)
    ema[:, 1:] = 1.0  # chains 0, 1, 1: mean 2/3, std sqrt(2)/3
    grid = compare_grid([raw, ema], (0.0, 1.0), 1)
    per_row = 2 * (c + 1) + 2 * 2  # each variant's chains + a blank, then mean and std per variant
    assert grid.shape == (3, n * (tile + PAD) + PAD, per_row * (tile + PAD) + PAD)
    for row in range(n):
        for col in range(c):
            assert torch.equal(_tile(grid, row, col, tile), torch.full((3, tile, tile), 0.25))
        assert torch.equal(_tile(grid, row, c, tile), torch.full((3, tile, tile), 0.5))  # blank
        assert torch.equal(_tile(grid, row, c + 1, tile), torch.zeros(3, tile, tile))
        stats = 2 * (c + 1)  # first mean/std column
        raw_mean = _tile(grid, row, stats, tile)
        torch.testing.assert_close(raw_mean, torch.full((3, tile, tile), 0.25))
        assert torch.equal(_tile(grid, row, stats + 1, tile), torch.zeros(3, tile, tile))  # raw std
        torch.testing.assert_close(_tile(grid, row, stats + 2, tile), torch.full((3, tile, tile), 2 / 3))
        std = (2 ** 0.5 / 3) / 0.5  # std scaled by half the box
        torch.testing.assert_close(_tile(grid, row, stats + 3, tile), torch.full((3, tile, tile), std))


def test_compare_grid_default_upscale_matches_neuron_grid():
    variants = [torch.rand(1, 2, 1, 12, 12) for _ in range(2)]
    grid = compare_grid(variants, (0.0, 1.0))
    assert grid.shape[1] == neuron_grid(variants[0], (0.0, 1.0)).shape[1] == 60 + 2 * PAD


def test_non_image_inputs_are_drawn_as_strips_or_grey_images():
    from lightning_ldam.render import compare_grid, neuron_grid

    vectors = torch.linspace(0, 1, 10).expand(2, 3, 10)  # 2 neurons x 3 chains x 10 features
    grid = neuron_grid(vectors, (0.0, 1.0))
    assert grid.shape == (3, 2 * (56 + 2) + 2, 3 * (10 * 56 + 2) + 2)  # 1 x 10 strips, 56 px high
    first = grid[0, 2:58, 2:2 + 560]  # the first strip: left to right, 10 blocks of 56 px, dark to bright
    assert torch.allclose(first[:, ::56][0], torch.linspace(0, 1, 10))
    long = neuron_grid(torch.rand(1, 2, 784), (0.0, 1.0))
    assert long.shape[-1] <= 2 * (1024 + 2) + 2  # a long strip is not blown up past 1024 px a tile
    planes = neuron_grid(torch.rand(1, 2, 8, 8), (0.0, 1.0))
    assert planes.shape == (3, 56 + 4, 2 * (56 + 2) + 2)
    assert compare_grid([vectors, vectors], (0.0, 1.0)).shape[0] == 3
