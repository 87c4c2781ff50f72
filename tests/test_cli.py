"""End-to-end tests of the ``lightning-ldam`` command line and of :mod:`lightning_ldam.weights.checkpoint`.

A tiny LightningModule (importable as ``test_cli.TinyClassifier``: pytest puts tests/ on sys.path) is trained
for 4 steps on random data once per module; the checkpoints cover LDAMCallback's own EMA + reservoir +
discriminators, Lightning's EMAWeightAveraging layout and plain checkpoints.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lightning_ldam.sampling.config import LangevinConfig

pl = pytest.importorskip("lightning.pytorch")

from helpers.sampling import sample_settings  # noqa: E402
from helpers.training import events  # noqa: E402

from lightning_ldam.callback import LDAMCallback  # noqa: E402
from lightning_ldam.cli import main  # noqa: E402
from lightning_ldam.weights.checkpoint import ldam_settings, ldam_state, load_checkpoint, real_inputs, weight_variants  # noqa: E402
from lightning_ldam.weights.ema import EMA  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAST = ["--chains", "2", "--steps", "3", "--no-progress"]
MODEL = ["--model", "test_cli.TinyClassifier"]


class TinyClassifier(pl.LightningModule):
    """conv(1→width)+ReLU | flatten + linear(→5) on 1×12×12 inputs."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.act = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width * 12 * 12, 5)

    def forward(self, x):
        return self.fc(self.flatten(self.act(self.conv(x))))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader():
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 12, 12, generator=g),
                                          torch.randint(0, 5, (32,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=8)


def _fit(root: Path, callbacks, checkpointing: bool = False, width: int = 4):
    model = TinyClassifier(width=width)
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(root), callbacks=callbacks,
                         enable_checkpointing=checkpointing)
    trainer.fit(model, _loader())
    return trainer, model


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """(a) LDAMCallback (own EMA, reservoir, discriminators), (b) EMAWeightAveraging saved mid-training by
    ModelCheckpoint at step 4 (after fit, Lightning copies the average into the model, so raw == ema there),
    (b_end) the same after fit, (c) plain, saved by ModelCheckpoint at steps 2 and 4 and after fit."""
    root = tmp_path_factory.mktemp("cli_ckpts")
    env = dict(os.environ)
    out = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cb = LDAMCallback("conv:0-1", every_n_epochs=None, max_overhead=None,
                          on_fit_end=True, chains=2, steps=3, reservoir_size=16,
                          sampler_kwargs={"disc_warmup": 1})
        trainer, model = _fit(root / "a", [cb])
        out["a"] = root / "a.ckpt"
        trainer.save_checkpoint(str(out["a"]))
        out["a_callback_state"] = cb.state_dict()
        out["a_model"] = model

        mc = pl.callbacks.ModelCheckpoint(dirpath=str(root / "b"), filename="ema-mid", every_n_train_steps=4,
                                          save_top_k=-1)
        trainer, _ = _fit(root / "b", [pl.callbacks.EMAWeightAveraging(decay=0.5), mc], checkpointing=True)
        out["b"] = root / "b" / "ema-mid.ckpt"
        out["b_end"] = root / "b_end.ckpt"
        trainer.save_checkpoint(str(out["b_end"]))

        mc = pl.callbacks.ModelCheckpoint(dirpath=str(root / "c"), every_n_train_steps=2, save_top_k=-1)
        trainer, _ = _fit(root / "c", [mc], checkpointing=True)
        out["c"] = root / "c.ckpt"
        trainer.save_checkpoint(str(out["c"]))
        out["c2"], out["c4"] = root / "c" / "epoch=0-step=2.ckpt", root / "c" / "epoch=0-step=4.ckpt"
    for key in set(os.environ) - set(env):
        del os.environ[key]
    os.environ.update(env)
    for key in ("a", "b", "b_end", "c", "c2", "c4"):
        assert out[key].is_file(), out[key]
    return out


@pytest.fixture(autouse=True)
def keep_sys_path(monkeypatch):
    """The CLI puts the cwd on sys.path; keep that out of the other tests."""
    monkeypatch.setattr(sys, "path", list(sys.path))


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ---- checkpoint.py ------------------------------------------------------------------------------------------
def test_ldam_checkpoint_variants_are_raw_and_the_callbacks_ema(ckpts):
    ckpt = load_checkpoint(ckpts["a"])
    variants = weight_variants(ckpt)
    assert list(variants) == ["raw", "ema"]
    ema_state = ckpts["a_callback_state"]["ema"]
    live = ckpts["a_model"].state_dict()
    for name, value in live.items():
        assert torch.equal(variants["raw"][name], ckpt["state_dict"][name])
        assert torch.equal(variants["raw"][name], value)
        assert torch.equal(variants["ema"][name], ema_state[f"average.module.{name}"])
    assert not torch.equal(variants["ema"]["conv.weight"], variants["raw"]["conv.weight"])
    state = ldam_state(ckpt)
    assert set(state["discriminators"]) == {"raw", "ema"}
    assert torch.equal(real_inputs(ckpt), state["reservoir"]["data"]) and real_inputs(ckpt).shape == (16, 1, 12, 12)
    assert ldam_settings(ckpt)["neurons"] == "conv:0-1" and ldam_settings(ckpt)["module"] is None


def test_lightning_weight_averaging_layout(ckpts):
    ckpt = load_checkpoint(ckpts["b"])
    variants = weight_variants(ckpt)
    assert list(variants) == ["raw", "ema"]
    for name in ckpt["state_dict"]:
        assert torch.equal(variants["raw"][name], ckpt["current_model_state"][name])
        assert torch.equal(variants["ema"][name], ckpt["state_dict"][name])
    assert not torch.equal(variants["raw"]["fc.weight"], variants["ema"]["fc.weight"])
    assert ldam_state(ckpt) is None and real_inputs(ckpt) is None


def test_plain_checkpoint_has_raw_only(ckpts):
    ckpt = load_checkpoint(ckpts["c"])
    assert list(weight_variants(ckpt)) == ["raw"]
    assert ckpt["hyper_parameters"]["width"] == 4


def test_zero_update_averages_are_not_variants_and_swa_callback_state():
    raw = {"w": torch.zeros(2)}
    swa = {"w": torch.ones(2)}
    base = {"state_dict": raw}
    assert list(weight_variants({**base, "callbacks": {"StochasticWeightAveraging": {
        "n_averaged": 0, "average_model_state": swa}}})) == ["raw"]
    got = weight_variants({**base, "callbacks": {"StochasticWeightAveraging": {
        "n_averaged": 3, "average_model_state": swa}}})
    assert list(got) == ["raw", "swa"] and torch.equal(got["swa"]["w"], swa["w"])
    lightning = {"state_dict": swa, "current_model_state": raw, "callbacks": {"WeightAveraging": {}}}
    assert list(weight_variants({**lightning, "averaging_state": {"n_averaged": torch.tensor(0)}})) == ["raw"]
    got = weight_variants({**lightning, "averaging_state": {"n_averaged": torch.tensor(2)}})
    assert list(got) == ["raw", "swa"] and torch.equal(got["raw"]["w"], raw["w"])


class _Twin(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(1, 2, 3))
        self.enc2 = nn.Sequential(nn.Conv2d(1, 2, 3))


def test_submodule_ema_keys_get_their_prefix_back():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = _Twin()
    ema = EMA(model.enc2, decay=0.5)
    for step in (1, 2):  # AveragedModel's first update copies; the second one averages
        with torch.no_grad():
            model.enc2[0].weight.add_(1.0)
        ema.update(model.enc2, step=step)
    raw = model.state_dict()
    key = LDAMCallback("0:0", module="enc2").state_key
    state = {"format": "lightning_ldam", "settings": {"module": "enc2"}, "ema": ema.state_dict()}
    variants = weight_variants({"state_dict": raw, "callbacks": {key: state}})
    assert torch.equal(variants["ema"]["enc2.0.weight"], ema.module[0].weight)
    assert not torch.equal(variants["ema"]["enc2.0.weight"], raw["enc2.0.weight"])
    assert torch.equal(variants["ema"]["enc1.0.weight"], raw["enc1.0.weight"])  # outside the submodule: raw
    model.load_state_dict(variants["ema"], strict=True)
    # no module recorded: inferred when one submodule fits, an error when two do
    only = {k: v for k, v in raw.items() if k.startswith("enc2")}
    unnamed = {"format": "lightning_ldam", "settings": {"module": None}, "ema": ema.state_dict()}
    got = weight_variants({"state_dict": {"net." + k: v for k, v in only.items()},
                           "callbacks": {"LDAMCallback": unnamed}})
    assert torch.equal(got["ema"]["net.enc2.0.weight"], ema.module[0].weight)
    with pytest.raises(ValueError, match="several submodules"):
        weight_variants({"state_dict": raw, "callbacks": {"LDAMCallback": unnamed}})


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.ckpt"):
        load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "dict.ckpt")
    with pytest.raises(ValueError, match="state_dict"):
        load_checkpoint(tmp_path / "dict.ckpt")


# ---- targets ------------------------------------------------------------------------------------------------
def test_targets_lists_paths_types_and_units(capsys):
    code, out, err = _run(capsys, "targets", "test_cli.TinyClassifier", "--input-shape", "1,12,12")
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["conv"] == ["conv", "Conv2d", "4x12x12", "4"]
    assert rows["act"][-1] == "4" and rows["flatten"][-1] == "576" and rows["fc"] == ["fc", "Linear", "5", "5"]


def test_targets_init_args_from_checkpoint_and_json(ckpts, capsys):
    code, out, err = _run(capsys, "targets", "test_cli.TinyClassifier", "--ckpt", ckpts["a"], "--init-args",
                          '{"width": 3}')
    assert code == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["conv"][-1] == "3" and rows["flatten"][-1] == "432"  # shape read from the reservoir, width from JSON


# ---- compare ------------------------------------------------------------------------------------------------
def test_compare_ldam_checkpoint_writes_tensorboard_and_png(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--neurons", "conv:0-1", "fc:0", "--out", out_dir,
                          *FAST)
    assert code == 0, err
    step = load_checkpoint(ckpts["a"])["global_step"]
    assert step == 4
    acc = events(out_dir)
    images, scalars = set(acc.Tags()["images"]), set(acc.Tags()["scalars"])
    for layer in ("conv", "fc"):
        for variant in ("raw", "ema", "compare"):
            tag = f"ldam/{variant}/{layer}"
            assert tag in images
            assert [e.step for e in acc.Images(tag)] == [step]
        for variant in ("raw", "ema"):
            for name in ("activation", "diversity", "nearest_real"):  # nearest_real: the reservoir gave real data
                assert f"ldam/{variant}/{layer}/{name}" in scalars
            # realism needs >= 4 samples of the layer: conv has 2 neurons x 2 chains, fc 1 x 2
            assert (f"ldam/{variant}/{layer}/realism" in scalars) == (layer == "conv")
    assert [e.step for e in acc.Scalars("ldam/nonfinite_resets")] == [step]
    raw_act = acc.Scalars("ldam/raw/conv/activation")[0].value
    assert raw_act != acc.Scalars("ldam/ema/conv/activation")[0].value  # different weights, same seed
    from PIL import Image

    for layer in ("conv", "fc"):
        png = out_dir / f"compare_{layer}.png"
        assert png.is_file()
        with Image.open(png) as img:
            assert img.width > img.height > 0
    assert f"tensorboard --logdir {out_dir}" in out and str(out_dir / "compare_conv.png") in out
    assert "16 from" in out  # real inputs from the reservoir


def test_compare_defaults_neurons_from_the_callback_and_is_deterministic(ckpts, tmp_path, capsys):
    vals = []
    for run in ("r1", "r2"):
        code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--out", tmp_path / run, *FAST)
        assert code == 0, err
        assert "'conv:0-1' (from the checkpoint's LDAMCallback)" in out
        vals.append([s.value for s in events(tmp_path / run).Scalars("ldam/ema/conv/activation")])
    assert vals[0] == vals[1]


def test_compare_lightning_ema_layout(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "lema"
    code, out, err = _run(capsys, "compare", ckpts["b"], *MODEL, "--neurons", "fc:0-1", "--input-shape", "1,12,12",
                          "--out", out_dir, *FAST)
    assert code == 0, err
    assert "λ = 0" in out  # no reservoir: no discriminator
    acc = events(out_dir)
    assert {"ldam/raw/fc", "ldam/ema/fc", "ldam/compare/fc"} <= set(acc.Tags()["images"])
    assert "ldam/raw/fc/realism" not in acc.Tags()["scalars"]
    assert acc.Images("ldam/ema/fc")[0].step == load_checkpoint(ckpts["b"])["global_step"]
    assert (out_dir / "compare_fc.png").is_file()


def test_compare_after_fit_lightning_checkpoint_notes_equal_weights(ckpts, tmp_path, capsys):
    code, out, err = _run(capsys, "compare", ckpts["b_end"], *MODEL, "--neurons", "fc:0", "--input-shape",
                          "1,12,12", "--out", tmp_path / "end", "--variants", "raw,ema", *FAST)
    assert code == 0, err
    assert "equal the raw ones" in err


def test_compare_two_checkpoints_names_variants_from_stems(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "two"
    code, out, err = _run(capsys, "compare", ckpts["c2"], ckpts["c4"], *MODEL, "--neurons", "conv:0",
                          "--input-shape", "1,12,12", "--value-range", "0,1", "--out", out_dir, *FAST)
    assert code == 0, err
    acc = events(out_dir)
    images = set(acc.Tags()["images"])
    assert {"ldam/epoch=0-step=2/conv", "ldam/epoch=0-step=4/conv", "ldam/compare/conv"} <= images
    assert acc.Images("ldam/compare/conv")[0].step == 2  # the first checkpoint's global_step
    a = acc.Scalars("ldam/epoch=0-step=2/conv/activation")[0].value
    assert a != acc.Scalars("ldam/epoch=0-step=4/conv/activation")[0].value


def test_compare_same_stem_twice_is_made_unique(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "same"
    code, out, err = _run(capsys, "compare", ckpts["c"], ckpts["c"], *MODEL, "--neurons", "fc:0", "--input-shape",
                          "1,12,12", "--out", out_dir, *FAST)
    assert code == 0, err
    images = set(events(out_dir).Tags()["images"])
    assert {"ldam/c/fc", "ldam/c-2/fc", "ldam/compare/fc"} <= images


def test_compare_with_normalization_and_single_variant(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "single"
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--neurons", "fc:1", "--mean", "0.5", "--std",
                          "0.25", "--variants", "ema", "--disc-weight", "0", "--out", out_dir, *FAST)
    assert code == 0, err
    images = set(events(out_dir).Tags()["images"])
    assert images == {"ldam/ema/fc"}
    assert (out_dir / "compare_fc.png").is_file()


# ---- errors: exit code 2, one line naming the argument ------------------------------------------------------
@pytest.mark.parametrize("argv, needle", [
    (["compare", "{missing}", *MODEL, "--neurons", "fc:0"], "CKPT: "),
    (["compare", "{bad}", *MODEL, "--neurons", "fc:0"], "is not a PyTorch checkpoint"),
    (["compare", "{a}", "--model", "nope_pkg.mod.Class", "--neurons", "fc:0"],
     "--model: cannot import 'nope_pkg.mod.Class'"),
    (["compare", "{a}", "--model", "test_cli.NoSuchClass", "--neurons", "fc:0"], "--model: cannot import "
                                                                                 "'test_cli.NoSuchClass'"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:9"], "--neurons: index 9 is out of range"),
    (["compare", "{a}", *MODEL, "--neurons", "nolayer:0"], "--neurons: layer path 'nolayer'"),
    (["compare", "{a}", *MODEL, "--neurons", "fc"], "--neurons: spec 'fc' has no ':'"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--input-shape", "1,x,12"], "argument --input-shape"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--input-shape", "1,28,28"], "--input-shape: 1,28,28"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--value-range", "1,0"], "argument --value-range"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--init-args", "{bad"], "argument --init-args"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--init-args", '{"depth": 2}'], "--model/--init-args"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--init-args", '{"width": 3}'], "do not fit"),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--variants", "raw,swa"], "--variants: "),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--mean", "0.5"], "--mean/--std: "),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--module", "nope"], "--module: "),
    (["compare", "{a}", *MODEL, "--neurons", "fc:0", "--device", "cpu", "--cuda-graph"],
     "--cuda-graph: CUDA graphs need a CUDA device"),
    (["compare", "{b}", *MODEL, "--neurons", "fc:0"], "--input-shape: required"),
    (["compare", "{b}", *MODEL, "--neurons", "fc:0", "--input-shape", "1,12,12", "--disc-weight", "1"],
     "--disc-weight: "),
    (["targets", "test_cli.TinyClassifier"], "--input-shape: required"),
    (["targets", "test_cli.TinyClassifier", "--input-shape", "3,12,12"], "--input-shape: the model rejected"),
    (["targets", "test_cli.TinyClassifier", "--input-shape", "1,12,12", "--ckpt", "{missing}"], "--ckpt: "),
])
def test_errors_exit_2_with_one_clear_line(ckpts, tmp_path, capsys, argv, needle):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"garbage")
    paths = {"missing": str(tmp_path / "missing.ckpt"), "bad": str(bad),
             **{k: str(ckpts[k]) for k in ("a", "b", "c")}}
    argv = [a.format(**paths) if a.startswith("{") and a[1:-1] in paths else a for a in argv]
    extra = ["--out", str(tmp_path / "o"), *FAST] if argv[0] == "compare" else []
    code, out, err = _run(capsys, *argv, *extra)
    assert code == 2
    assert needle in err, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(("lightning-ldam: error: ", "lightning-ldam compare: error: ",
                            "lightning-ldam targets: error: ")), err
    if "missing" in needle or needle in ("CKPT: ", "--ckpt: "):
        assert "missing.ckpt" in last


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "compare" in capsys.readouterr().out
    assert main(["compare", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--neurons" in out and "sys.path" in out


# ---- entry points -------------------------------------------------------------------------------------------
def test_python_dash_m_help():
    proc = subprocess.run([sys.executable, "-m", "lightning_ldam", "--help"], capture_output=True, text=True,
                          cwd=str(REPO), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "targets" in proc.stdout and "compare" in proc.stdout


def test_console_script_help():
    script = Path(sys.executable).parent / "lightning-ldam"
    if not script.exists():
        pytest.skip(f"console script not installed at {script} (run `pip install -e .`)")
    proc = subprocess.run([str(script), "compare", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--model" in proc.stdout and "--variants" in proc.stdout


def _spy_steps(monkeypatch):
    """Records the steps each full sampling call asks for (1-chain neuron checks aside) and runs 2."""
    import lightning_ldam.engine.rounds as sampler  # the shared round calls sample()

    asked, real = [], sampler.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the 1- and 2-step target checks
            asked.append(settings.get("steps"))
        return real(*args, **{**kwargs, "steps": 2})

    monkeypatch.setattr(sampler, "sample", spy)
    return asked


def test_compare_takes_the_warm_discriminator_steps_when_every_variant_has_one(
        ckpts, tmp_path, capsys, monkeypatch):
    from lightning_ldam.sampling.api import WARM_DISC_STEPS

    asked = _spy_steps(monkeypatch)
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--chains", "2", "--out", tmp_path / "w",
                          "--no-progress")
    assert code == 0, err
    assert asked == [WARM_DISC_STEPS, WARM_DISC_STEPS] and f"steps: {WARM_DISC_STEPS}" in out
    asked.clear()
    code, out, err = _run(capsys, "compare", ckpts["b"], *MODEL, "--neurons", "fc:0", "--input-shape", "1,12,12",
                          "--chains", "2", "--out", tmp_path / "f", "--no-progress")
    assert code == 0, err
    assert asked == [LangevinConfig().steps] * 2  # no saved discriminators: the sampler's default


@pytest.mark.parametrize("flags, expected", [
    ([], {"autocast_dtype": None, "channels_last": False, "cuda_graph": False, "method": "langevin"}),
    (["--autocast-dtype", "bfloat16", "--channels-last"], {"autocast_dtype": torch.bfloat16, "channels_last": True,
                                                           "cuda_graph": False, "method": "langevin"}),
    (["--method", "mala", "--no-adapt-disc"], {"autocast_dtype": None, "method": "mala", "adapt_disc": False}),
    (["--metric", "diagonal", "--steps", "16", "--scale", "auto", "--target-accept", "none", "--disc-steps", "3"],
     {"method": "langevin", "metric": "diagonal", "scale": "auto", "target_accept": None, "disc_steps": 3}),
])
def test_sampler_setting_options_reach_the_sampler(ckpts, tmp_path, capsys, monkeypatch, flags, expected):
    import lightning_ldam.engine.rounds as sampler  # the shared round calls sample()

    seen, real = [], sampler.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the 1- and 2-step target checks
            seen.append({k: settings.get(k) for k in expected})
        return real(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    code, _, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--out", tmp_path / "s", *FAST, *flags)
    assert code == 0, err
    assert seen and all(s == expected for s in seen)


class TinyBNClassifier(TinyClassifier):
    """TinyClassifier with a BatchNorm after the conv: what SWA's parameter-only average gets wrong."""

    def __init__(self, width: int = 4):
        super().__init__(width)
        self.act = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())


def test_swa_variant_gets_batchnorm_statistics_recomputed_on_the_saved_inputs(tmp_path, capsys, monkeypatch):
    from lightning.pytorch.callbacks import StochasticWeightAveraging

    from lightning_ldam.weights.checkpoint import params_only_variants
    from lightning_ldam.weights.ema import refresh_batchnorm

    torch.manual_seed(0)
    cb = LDAMCallback("conv:0-1", every_n_epochs=None, max_overhead=None, on_fit_end=True, chains=2, steps=2,
                      reservoir_size=16, sampler_kwargs={"disc_warmup": 1})
    trainer = pl.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), enable_checkpointing=False,
                         callbacks=[cb, StochasticWeightAveraging(swa_lrs=0.05, swa_epoch_start=1)])
    trainer.fit(TinyBNClassifier(), _loader())
    path = tmp_path / "swa.ckpt"
    trainer.save_checkpoint(str(path))
    ckpt = load_checkpoint(str(path))
    assert params_only_variants(ckpt) == ["swa"] and "swa" in weight_variants(ckpt)

    seen = {}
    import lightning_ldam.engine.rounds as sampler  # the shared round calls sample()
    real_sample = sampler.sample

    def spy(net, *args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the 1- and 2-step target checks
            seen[len(seen)] = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
        return real_sample(net, *args, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    code, out, err = _run(capsys, "compare", path, "--model", "test_cli.TinyBNClassifier", "--variants", "swa",
                          "--out", tmp_path / "o", *FAST)
    assert code == 0, err
    assert "BatchNorm statistics recomputed on the 16 saved real inputs" in out
    expected = TinyBNClassifier()
    expected.load_state_dict(weight_variants(ckpt)["swa"])
    stale = {k: v.clone() for k, v in expected.state_dict().items() if "running" in k}
    refresh_batchnorm(expected.eval(), real_inputs(ckpt))
    fresh = {k: v for k, v in expected.state_dict().items() if "running" in k}
    assert all(torch.allclose(seen[0][k], fresh[k]) for k in fresh)
    assert not all(torch.equal(stale[k], fresh[k]) for k in fresh)


def test_compare_reuses_the_callbacks_normalize_and_value_range(tmp_path, capsys, monkeypatch):
    cb = LDAMCallback("conv:0-1", every_n_epochs=None, max_overhead=None, on_fit_end=True, chains=2, steps=2,
                      reservoir_size=16, normalize=(0.5, 0.25), value_range=(0.0, 1.0),
                      sampler_kwargs={"disc_warmup": 1})
    trainer, _ = _fit(tmp_path, [cb])
    path = tmp_path / "norm.ckpt"
    trainer.save_checkpoint(str(path))
    settings = cb.state_dict()["settings"]
    assert settings["normalize"] == [[0.5], [0.25]] and settings["value_range"] == [0.0, 1.0]

    import lightning_ldam.engine.rounds as sampler  # the shared round calls sample()
    seen, real_sample = [], sampler.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        if settings.get("steps") not in (1, 2):  # not the 1- and 2-step target checks
            seen.append((settings["normalize"], settings["value_range"]))
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(sampler, "sample", spy)
    code, out, err = _run(capsys, "compare", path, *MODEL, "--out", tmp_path / "o", *FAST)
    assert code == 0, err
    assert "normalisation from the checkpoint" in out and "the callback's value_range" in out
    (mean, std), box = seen[0]
    assert box == (0.0, 1.0) and float(mean.flatten()[0]) == 0.5 and float(std.flatten()[0]) == 0.25
    code, out, err = _run(capsys, "compare", path, *MODEL, "--out", tmp_path / "p", *FAST,
                          "--mean", "0.1", "--std", "0.2")
    assert code == 0, err
    assert float(seen[-1][0][0].flatten()[0]) == pytest.approx(0.1)  # the flags win


def test_compare_seed_sets_the_samples(ckpts, tmp_path, capsys):
    """``--seed`` reaches the sampler: the same seed twice gives the same contact sheet and scalars, another seed
    a different one (a CLI that always sampled with one fixed seed would give three identical runs)."""
    import numpy as np
    from PIL import Image

    def run(name, seed):
        out_dir = tmp_path / name
        code, _, err = _run(capsys, "compare", ckpts["b"], *MODEL, "--neurons", "fc:0-1", "--input-shape", "1,12,12",
                            "--variants", "ema", "--seed", seed, "--out", out_dir, *FAST)
        assert code == 0, err
        with Image.open(out_dir / "compare_fc.png") as img:
            pixels = np.asarray(img.convert("RGB")).copy()
        return pixels, [s.value for s in events(out_dir).Scalars("ldam/ema/fc/activation")]

    first, again, other = run("s3", 3), run("s3-again", 3), run("s5", 5)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert not np.array_equal(first[0], other[0])
    assert first[1] != other[1]


# ---- issue #11: --out and shapes checked before sampling; the callback's state found by its format -------------
def _count_sampling(monkeypatch):
    import lightning_ldam.engine.rounds as rounds

    calls, real = [], rounds.sample

    def spy(*args, **kwargs):
        settings = sample_settings(kwargs)
        calls.append(settings.get("chains"))
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds, "sample", spy)
    return calls


def test_an_out_path_that_is_a_file_fails_before_any_sampling(ckpts, tmp_path, capsys, monkeypatch):
    calls = _count_sampling(monkeypatch)
    target = tmp_path / "taken.txt"
    target.write_text("not a directory")
    code, _, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--neurons", "fc:0", *FAST, "--out", target)
    assert code == 2 and calls == []
    assert err.strip().splitlines() == [f"lightning-ldam: error: --out: {str(target)!r} exists and is not a "
                                        f"directory; pass a directory (it is created if missing)"]


def test_an_out_path_that_cannot_be_created_fails_before_any_sampling(ckpts, tmp_path, capsys, monkeypatch):
    calls = _count_sampling(monkeypatch)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file")
    code, _, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--neurons", "fc:0", *FAST,
                        "--out", blocker / "sub")
    assert code == 2 and calls == [] and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lightning-ldam: error: --out: cannot write to")


@pytest.mark.parametrize("shape", ["12,12", "1,1,12,12"])
def test_a_wrong_rank_input_shape_is_one_line_naming_the_option(ckpts, tmp_path, capsys, shape):
    code, _, err = _run(capsys, "compare", ckpts["b"], *MODEL, "--neurons", "fc:0", "--input-shape", shape, *FAST,
                        "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lightning-ldam: error: --input-shape: "), err


def _resave(src, dst, edit):
    ckpt = torch.load(str(src), map_location="cpu", weights_only=False)
    edit(ckpt)
    torch.save(ckpt, str(dst))
    return dst


def test_a_subclass_state_key_is_found_by_the_states_format(ckpts, tmp_path, capsys):
    def rename(ckpt):
        key = next(k for k in ckpt["callbacks"] if k.startswith("LDAMCallback"))
        ckpt["callbacks"]["MyDiagnostics{'anything': 1}"] = ckpt["callbacks"].pop(key)

    path = _resave(ckpts["a"], tmp_path / "sub.ckpt", rename)
    assert ldam_settings(load_checkpoint(path))["neurons"] == "conv:0-1"
    code, out, err = _run(capsys, "compare", path, *MODEL, *FAST, "--out", tmp_path / "o")
    assert code == 0, err
    assert "neurons: 'conv:0-1' (from the checkpoint's LDAMCallback)" in out


def test_an_ldam_state_without_its_settings_dict_is_refused_clearly(ckpts, tmp_path):
    def without_settings(ckpt):
        key = next(k for k in ckpt["callbacks"] if k.startswith("LDAMCallback"))
        del ckpt["callbacks"][key]["settings"]

    ckpt = load_checkpoint(_resave(ckpts["a"], tmp_path / "other.ckpt", without_settings))
    with pytest.raises(ValueError, match=r"^the LDAMCallback state .LDAMCallback.* has no 'settings' dict: it was "
                                         r"not written by this version of lightning_ldam$"):
        ldam_settings(ckpt)


def test_compare_prints_and_writes_the_metrics_table(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "m"
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, *FAST, "--out", out_dir)
    assert code == 0, err
    import csv

    rows = list(csv.DictReader(open(out_dir / "metrics.csv")))
    assert [(r["layer"], r["variant"]) for r in rows] == [("conv", "raw"), ("conv", "ema")]
    raw, ema = rows
    assert ema["divergence"] != "" and float(ema["divergence"]) >= 0 and raw["divergence"] == ""
    assert raw["dead"] != "" and ema["dead"] == ""  # health: the raw weights', on the raw row
    for r in rows:
        assert float(r["lift"]) == float(r["lift"]) and float(r["realism"]) > 0  # finite, against the reservoir
    assert raw["drift"] == ema["drift"] == ""  # one compare has no previous round (the CSV keeps the column)
    md = (out_dir / "metrics.md").read_text()
    assert md.splitlines()[0].startswith("| layer | variant | lift | realism |") and md.strip() in out
    assert "drift" not in md.splitlines()[0] and "retention" not in md.splitlines()[0]  # empty columns left out


def test_labels_for_a_layer_the_model_lacks_fail_before_any_sampling(ckpts, tmp_path, capsys, monkeypatch):
    import lightning_ldam.engine.rounds as rounds

    calls = []
    real = rounds.sample
    monkeypatch.setattr(rounds, "sample", lambda *a, **k: calls.append(sample_settings(k)["steps"]) or real(*a, **k))
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--labels", '{"fcc": ["zero", "one"]}',
                          "--out", tmp_path / "out", *FAST)
    assert code == 2 and "--labels" in err and "'fcc'" in err and "Close matches" in err, err
    assert all(s in (1, 2) for s in calls), calls  # only the 1-step target check ran: no sampling call


def test_a_misspelt_model_fails_before_any_checkpoint_is_read(ckpts, tmp_path, capsys, monkeypatch):
    import lightning_ldam.cli as cli

    loaded = []
    real_load = cli._load
    monkeypatch.setattr(cli, "_load", lambda *a, **k: loaded.append(a) or real_load(*a, **k))
    code, out, err = _run(capsys, "compare", ckpts["a"], "--model", "test_cli.TinyClasifier", "--out",
                          tmp_path / "out", *FAST)
    assert code == 2 and "--model" in err and loaded == []


def test_a_sampler_setting_the_method_refuses_fails_before_any_checkpoint_is_read(ckpts, tmp_path, capsys,
                                                                                 monkeypatch):
    import lightning_ldam.cli as cli

    loaded = []
    monkeypatch.setattr(cli, "_load", lambda *a, **k: loaded.append(a))
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--leapfrog-steps", "4", "--out", tmp_path / "out",
                          *FAST)
    assert code == 2 and "--leapfrog-steps" in err and "hmc" in err and loaded == []


def test_threads_sets_torchs_threads_and_refuses_zero(ckpts, tmp_path, capsys):
    before = torch.get_num_threads()
    try:
        code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--threads", "1", "--out", tmp_path / "o", *FAST)
        assert code == 0, err
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    code, out, err = _run(capsys, "compare", ckpts["a"], *MODEL, "--threads", "0", "--out", tmp_path / "p", *FAST)
    assert code == 2 and "--threads: expected an int >= 1, got 0" in err


def test_a_single_plain_checkpoint_is_sampled_as_raw(ckpts, tmp_path, capsys):
    out_dir = tmp_path / "plain"
    code, out, err = _run(capsys, "compare", ckpts["c"], *MODEL, "--neurons", "fc:0-1", "--input-shape", "1,12,12",
                          "--out", out_dir, *FAST)
    assert code == 0, err
    assert "holds no averaged weights" in err and "raw weights alone" in err
    assert set(events(out_dir).Tags()["images"]) >= {"ldam/raw/fc"}
    assert not any(t.startswith(("ldam/ema/", "ldam/swa/")) for t in events(out_dir).Tags()["images"])


def test_two_checkpoints_read_across_each_other_with_no_phantom_raw_row(ckpts, tmp_path, capsys):
    """The first checkpoint is the reference: transfer is measured between the two (with the first's saved inputs),
    and the health counts sit on its row; no row is named 'raw'."""
    out_dir = tmp_path / "across"
    code, out, err = _run(capsys, "compare", ckpts["a"], ckpts["c4"], *MODEL, "--neurons", "conv:0-1",
                          "--out", out_dir, *FAST)
    assert code == 0, err
    tags = set(events(out_dir).Tags()["scalars"])
    assert "ldam/divergence/epoch=0-step=4/conv" in tags
    assert not any(t.startswith("ldam/raw/") for t in tags)
    table = (out_dir / "metrics.md").read_text()
    variants = {line.split("|")[2].strip() for line in table.splitlines()[2:] if line.startswith("|")}
    assert variants == {"a", "epoch=0-step=4"}, table
