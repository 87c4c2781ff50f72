"""The package as users get it: a wheel built from this tree and installed in a clean virtual environment."""
from __future__ import annotations

import pathlib
import subprocess
import sys
import sysconfig
import venv
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (path,) = out.glob("lightning_ldam-*.whl")
    return path


def test_the_wheel_ships_every_subpackage_the_license_and_py_typed(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for sub in ("sampling", "weights", "engine", "report", "callback"):
        assert f"lightning_ldam/{sub}/__init__.py" in names, sub
    assert "lightning_ldam/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "benchmarks/", "examples/")) for n in names)


def test_the_wheel_installs_and_runs_in_a_clean_environment(wheel, tmp_path):
    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True)
    # the dependencies (torch, lightning, ...) from this environment's site-packages, appended after the clean
    # environment's own: its lightning_ldam is the wheel's, not this checkout's
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    pathlib.Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    code = ("import torch, lightning_ldam as ldam, lightning_ldam.callback\n"
            "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
            "res = ldam.sample(net, '1:0-1', input_shape=(1, 4, 4), chains=2, steps=4)\n"
            "print(ldam.__file__, tuple(res.images.shape), ldam.LDAMCallback.__name__)")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path).stdout
    where, shape = out.split()[0], out.split(" ", 1)[1]
    assert where.startswith(str(env)) and "(2, 2, 1, 4, 4) LDAMCallback" in shape, out
    cli = subprocess.run([str(env / "bin" / "lightning-ldam"), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert cli.returncode == 0 and "compare" in cli.stdout
