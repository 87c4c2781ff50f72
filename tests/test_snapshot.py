"""Frozen, isolated snapshots of a live network (``lightning_ldam.weights.snapshot``)."""
import gc
import types
import weakref

import lightning.pytorch as pl
import torch
from torch import nn

from lightning_ldam.weights.snapshot import snapshot


class Module(pl.LightningModule):
    def __init__(self):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
            self.head = nn.Linear(4 * 6 * 6, 3)
        self.dataset = torch.utils.data.TensorDataset(torch.rand(8, 1, 6, 6))  # user attributes
        self.cache = {"last": None}
        self.features[1].eval()  # a frozen submodule
        self.features[0].bias.requires_grad_(False)

    def forward(self, x):
        out = self.head(self.features(x).flatten(1))
        self.last_output = out  # a non-leaf tensor hanging on the module
        return out


def _trained():
    m = Module().train()
    m.features[1].eval()
    m(torch.rand(2, 1, 6, 6)).sum().backward()
    m.trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                           enable_checkpointing=False, accelerator="cpu")
    return m


def _ptrs(module):
    return {t.data_ptr() for t in list(module.parameters()) + list(module.buffers())}


def test_no_shared_storage_and_frozen():
    live = _trained()
    snap = snapshot(live)
    assert not _ptrs(live) & _ptrs(snap)
    assert all(not p.requires_grad for p in snap.parameters())
    assert all(p.grad is None for p in snap.parameters())
    assert not any(m.training for m in snap.modules())
    for k, v in live.state_dict().items():
        assert torch.equal(snap.state_dict()[k], v), k


def test_live_model_is_left_as_found():
    live = _trained()
    modes = {n: m.training for n, m in live.named_modules()}
    flags = {n: p.requires_grad for n, p in live.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in live.named_parameters()}
    snapshot(live)
    assert modes[""] is True and modes["features.1"] is False
    assert {n: m.training for n, m in live.named_modules()} == modes
    assert {n: p.requires_grad for n, p in live.named_parameters()} == flags
    for n, p in live.named_parameters():
        assert (p.grad is None) == (grads[n] is None) and (p.grad is None or torch.equal(p.grad, grads[n])), n


def test_no_trainer_reference_and_user_attributes_not_copied():
    live = _trained()
    live(torch.rand(1, 1, 6, 6))
    assert live._trainer is not None
    snap = snapshot(live)
    assert snap._trainer is None
    assert live._trainer is not None  # the live module keeps its trainer
    assert snap.dataset is live.dataset  # referenced, not copied
    assert snap.last_output is live.last_output
    assert snap.cache is not live.cache  # containers are copied, so the snapshot never mutates them


def test_hook_dicts_are_not_shared():
    live = _trained()
    calls = []
    live.head.register_forward_hook(lambda m, a, o: calls.append("live"))
    snap = snapshot(live)
    assert snap.head._forward_hooks is not live.head._forward_hooks
    snap.head.register_forward_hook(lambda m, a, o: calls.append("snap"))
    assert len(live.head._forward_hooks) == 1 and len(snap.head._forward_hooks) == 2
    live.eval()
    live(torch.rand(1, 1, 6, 6))
    assert calls == ["live"]


def test_forward_equals_the_live_network_in_eval_mode():
    live = _trained()
    snap = snapshot(live)
    x = torch.rand(3, 1, 6, 6)
    live.eval()
    with torch.no_grad():
        assert torch.equal(snap(x), live(x))


def test_method_patched_on_the_instance_is_rebound_to_the_copy():
    live = _trained()

    def forward(self, x):
        return self.head(self.features(x).flatten(1)) * 2

    live.forward = types.MethodType(forward, live)
    snap = snapshot(live)
    assert snap.forward.__self__ is snap
    with torch.no_grad():
        snap.head.weight.zero_()
        snap.head.bias.fill_(1.0)
        assert torch.equal(snap(torch.rand(1, 1, 6, 6)), torch.full((1, 3), 2.0))


def test_device_argument_and_plain_modules():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    snap = snapshot(net, "cpu")
    assert not snap.training and next(snap.parameters()).device.type == "cpu"
    assert not _ptrs(net) & _ptrs(snap)


def test_snapshot_is_collectable():
    live = _trained()
    ref = weakref.ref(snapshot(live))
    gc.collect()
    assert ref() is None
