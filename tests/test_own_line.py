"""LDAM's log lines start on their own line while Lightning's tqdm bar is drawn (log files and terminals)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest
from tqdm import tqdm

from lightning_ldam.callback.own_line import own_line

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_message_after_a_bar_in_a_file_starts_its_own_line_and_twice_adds_no_blank_line():
    stream = io.StringIO()  # not a terminal, as a log file
    bar = tqdm(total=10, file=stream, desc="Epoch 0", mininterval=0)
    try:
        bar.update(3)
        with own_line():
            stream.write("LDAMCallback: first\n")
        with own_line():  # the bar has not redrawn since: no second newline
            stream.write("LDAMCallback: second\n")
        bar.update(3)
        with own_line():
            stream.write("LDAMCallback: third\n")
    finally:
        bar.close()
    lines = stream.getvalue().split("\n")
    for name in ("first", "second", "third"):
        assert f"LDAMCallback: {name}" in lines, lines
    assert lines.index("LDAMCallback: second") == lines.index("LDAMCallback: first") + 1
    assert "Epoch 0" in lines[0] and "LDAM" not in lines[0]


def test_without_a_bar_nothing_is_written():
    stream = io.StringIO()
    with own_line():
        stream.write("x\n")
    assert stream.getvalue() == "x\n"


SCRIPT = textwrap.dedent("""
    import torch, lightning.pytorch as pl
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from lightning_ldam import LDAMCallback

    class Net(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
        def forward(self, x):
            return self.net(x)
        def training_step(self, batch, i):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    torch.manual_seed(0)
    data = TensorDataset(torch.rand(32, 1, 8, 8), torch.randint(0, 3, (32,)))
    cb = LDAMCallback("net.3:all", every_n_epochs=1, chains=2, steps=3, max_overhead=None)
    trainer = pl.Trainer(max_epochs=2, callbacks=[cb], logger=False, enable_checkpointing=False,
                         enable_model_summary=False, enable_progress_bar=True, accelerator="cpu")
    trainer.fit(Net(), DataLoader(data, batch_size=8))
""")


@pytest.mark.timeout(300)
def test_in_a_log_file_of_a_fit_every_ldam_line_starts_a_line(tmp_path):
    log = tmp_path / "fit.log"
    env = {**os.environ, "PYTHONPATH": ROOT}
    env.pop("PYTEST_CURRENT_TEST", None)
    with open(log, "w") as out:  # stdout and stderr in one file, as `python train.py > fit.log 2>&1`
        subprocess.run([sys.executable, "-c", SCRIPT], stdout=out, stderr=subprocess.STDOUT, env=env, check=True,
                       cwd=tmp_path, timeout=280)
    text = log.read_text()
    lines = [line for line in text.split("\n") if "LDAMCallback:" in line]
    assert any("sampling" in line for line in lines), text[-2000:]  # the round's up-front line is there
    glued = [line for line in lines if not line.lstrip().startswith(("LDAMCallback:", "UserWarning: LDAMCallback"))
             and "warnings.warn" not in line and ".py:" not in line]
    assert not glued, glued
    assert any("Epoch 1" in line for line in text.split("\n"))  # the bar was drawn in the file
