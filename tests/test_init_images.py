"""Chains started from given images: ``init=`` a tensor of starting images in pixel space (issue #21 item 4)."""
from __future__ import annotations

import pytest
import torch

from lightning_ldam.errors import LDAMArgumentError


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 8 * 8, 3)).eval()


def test_chains_start_from_given_images_and_a_cold_short_run_stays_near_them():
    import lightning_ldam as ldam

    torch.manual_seed(0)
    start = torch.rand(3, 1, 8, 8)  # [chains, C, H, W]: every neuron's chains start from these
    res = ldam.sample(_net(), "3:0-1", input_shape=(1, 8, 8), chains=3, steps=4, burn_in=2, step_size=1e-4,
                      disc_weight=0.0, init=start, seed=0, temperature=1e-3)
    assert res.config["init"] == "images [3, 1, 8, 8]"
    for neuron in range(2):  # a few tiny steps: each chain is still its own start, not another's or noise
        dist = torch.cdist(res.images[neuron].flatten(1), start.flatten(1))
        assert (dist.argmin(1) == torch.arange(3)).all()
    per_neuron = torch.stack([start, 1 - start])  # [neurons, chains, C, H, W]
    res2 = ldam.sample(_net(), "3:0-1", input_shape=(1, 8, 8), chains=3, steps=4, burn_in=2, step_size=1e-4,
                       disc_weight=0.0, init=per_neuron, seed=0, temperature=1e-3)
    assert (res2.images[1] - (1 - start)).abs().mean() < (res2.images[1] - start).abs().mean()


@pytest.mark.parametrize("init, match", [
    (torch.rand(3, 1, 8, 9), r"a float tensor of \[chains, 1, 8, 8\]"),
    (torch.randint(0, 2, (3, 1, 8, 8)), r"a float tensor"),
    (torch.full((3, 1, 8, 8), 2.0), r"inside value_range=\(0.0, 1.0\).*\[2, 2\]"),
    (torch.full((3, 1, 8, 8), float("nan")), r"finite starting images"),
    (torch.rand(5, 3, 1, 8, 8), r"for 2 neurons x 3 chains"),
    (torch.rand(4, 1, 8, 8), r"for 2 neurons x 3 chains"),
])
def test_bad_starting_images_are_refused_naming_init(init, match):
    import lightning_ldam as ldam

    with pytest.raises(LDAMArgumentError, match=r"^init: .*" + match):
        ldam.sample(_net(), "3:0-1", input_shape=(1, 8, 8), chains=3, steps=4, disc_weight=0.0, init=init)
