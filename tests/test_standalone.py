"""The callback on the standalone `pytorch_lightning` package: same logic, other base class."""
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pl = pytest.importorskip("pytorch_lightning", reason="the standalone pytorch_lightning package is not installed")

from lightning_ldam.callback.ldam_callback import LDAMCallbackLogic  # noqa: E402
from lightning_ldam.callback.standalone import LDAMCallback  # noqa: E402


class TinyModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                       torch.nn.Linear(3 * 6 * 6, 4))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_standalone_callback_is_a_pytorch_lightning_callback_sharing_the_logic():
    assert issubclass(LDAMCallback, pl.Callback)
    assert issubclass(LDAMCallback, LDAMCallbackLogic)
    assert LDAMCallback.should_sample is LDAMCallbackLogic.should_sample


def test_standalone_callback_runs_under_pytorch_lightning_trainer(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = TensorDataset(torch.rand(16, 1, 8, 8), torch.randint(0, 4, (16,)))
    cb = LDAMCallback(["net.0:0-1", "net.3:all"], every_n_train_steps=2, every_n_epochs=None, max_overhead=None,
                      chains=2, steps=3,
                      disc_weight=0.0)
    trainer = pl.Trainer(max_steps=4, default_root_dir=tmp_path, callbacks=[cb], accelerator="cpu",
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(TinyModule(), DataLoader(data, batch_size=4))
    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0})
    acc.Reload()
    assert [e.step for e in acc.Images("ldam/raw/net.3")] == [2, 4]
    assert [e.step for e in acc.Images("ldam/compare/net.0")] == [2, 4]
