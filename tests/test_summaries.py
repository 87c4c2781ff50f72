"""The tag contract of ``summaries.summarize`` for the sampler's newer fields."""
import torch

from lightning_ldam.report.tags import summarize
from lightning_ldam.sampling.result import SampleResult


def _result(acceptance):
    n, c = 3, 2
    return SampleResult(neurons=[("a", 0), ("a", 1), ("b", 0)], images=torch.rand(n, c, 1, 4, 4),
                        activations=torch.zeros(n, c), trace=torch.zeros(n, c, 5), disc_scores=None,
                        nonfinite_resets=torch.zeros(n, dtype=torch.long), value_range=(0.0, 1.0),
                        acceptance_rate=acceptance)


def test_mala_acceptance_is_logged_per_layer_as_the_mean_over_its_neurons():
    _, scalars = summarize({"raw": _result(torch.tensor([0.5, 0.7, 0.9]))})
    assert abs(scalars["ldam/raw/a/acceptance"] - 0.6) < 1e-6
    assert abs(scalars["ldam/raw/b/acceptance"] - 0.9) < 1e-6


def test_no_acceptance_scalar_without_mala():
    _, scalars = summarize({"raw": _result(None)})
    assert not [tag for tag in scalars if tag.endswith("/acceptance")]
