"""End to end: what LDAMCallback logs is served by a real TensorBoard server over its HTTP API.

A tiny CPU run logs rounds at steps 2 and 4 (raw and EMA variants); then ``python -m tensorboard.main`` is
started on a free localhost port and its JSON/PNG endpoints (the ones TensorBoard's own frontend uses) are
queried with ``urllib``: runs, plugin listing, image tags, image steps, one PNG and the scalar series.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List

import pytest
from helpers.training import NEURONS, PAD, TILE, fit
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_ldam.callback import LDAMCallback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from tensorboard_screenshot import tensorboard_server  # noqa: E402  (the README screenshot tool's server)

pytestmark = [pytest.mark.usefixtures("lightning_env"), pytest.mark.slow]

#: Bypass any http(s)_proxy from the environment: the server is on localhost.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STARTUP_TIMEOUT = 60.0
IMAGE_TAGS = {f"ldam/{v}/{layer}" for v in ("raw", "ema", "compare") for layer in ("features.0", "classifier.2")}


def _free_port() -> int:
    """A localhost port that was free a moment ago; skips the test where no socket can be bound."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    except OSError as e:
        pytest.skip(f"cannot bind a localhost TCP socket for the TensorBoard server: {e}")


def _get(base: str, path: str, **params: Any) -> bytes:
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with _OPENER.open(url, timeout=10) as response:
        assert response.status == 200, url
        return response.read()


def _json(base: str, path: str, **params: Any) -> Any:
    return json.loads(_get(base, path, **params))


def _wait_until_served(server: subprocess.Popen, base: str, run: str, log_path) -> None:
    """Polls until the server lists the run with every image tag and both image steps."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}:\n{log_path.read_text()}")
        try:
            tags = _json(base, "/data/plugin/images/tags").get(run, {})
            if IMAGE_TAGS <= set(tags):
                steps = [e["step"] for e in _json(base, "/data/plugin/images/images", run=run,
                                                  tag="ldam/raw/features.0")]
                if steps == [2, 4]:
                    return
                last = steps
            else:
                last = sorted(tags)
        except (urllib.error.URLError, ConnectionError, OSError, ValueError) as e:  # not listening/loaded yet
            last = repr(e)
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not serve the run within {STARTUP_TIMEOUT:.0f}s (last: {last}):\n"
                f"{log_path.read_text()}")


def test_real_tensorboard_server_serves_ldam_images_and_scalars(tmp_path, no_failed_rounds):
    cb = LDAMCallback(NEURONS, every_n_train_steps=2, every_n_epochs=None, max_overhead=None, chains=2, steps=3,
                      reservoir_size=16, sampler_kwargs={"disc_warmup": 1})
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    fit(tmp_path, [cb], max_steps=4, logger=logger)
    logdir = str(tmp_path / "tb")
    run = os.path.relpath(logger.log_dir, logdir).replace(os.sep, "/")  # "version_0"

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server_tmp = tmp_path / "server_tmp"  # tensorboard writes its .tensorboard-info under TMPDIR
    server_tmp.mkdir()
    log_path = tmp_path / "tensorboard.log"
    with open(log_path, "wb") as log, tensorboard_server(logdir, port, log, samples="images=100", cwd=str(tmp_path),
                                                         env={**os.environ, "TMPDIR": str(server_tmp)}) as server:
        _wait_until_served(server, base, run, log_path)

        assert run in _json(base, "/data/runs")
        plugins = _json(base, "/data/plugins_listing")
        assert plugins["images"]["enabled"] and plugins["scalars"]["enabled"]

        image_tags: Dict[str, Dict[str, Any]] = _json(base, "/data/plugin/images/tags")[run]
        for tag in ("ldam/raw/features.0", "ldam/ema/classifier.2", "ldam/compare/features.0"):
            assert tag in image_tags, sorted(image_tags)
            assert image_tags[tag]["samples"] == 1  # one image per event
        assert {t for t in image_tags if t.startswith("ldam/")} == IMAGE_TAGS

        for tag in ("ldam/raw/features.0", "ldam/ema/classifier.2", "ldam/compare/features.0"):
            entries: List[Dict[str, Any]] = _json(base, "/data/plugin/images/images", run=run, tag=tag)
            assert [e["step"] for e in entries] == [2, 4], tag

        # the query string of an entry is what the frontend appends to individualImage
        last = _json(base, "/data/plugin/images/images", run=run, tag="ldam/raw/features.0")[-1]
        png = _get(base, "/data/plugin/images/individualImage?" + last["query"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")  # IHDR
        # 2 neurons (rows) x 2 chains (tiles), 60 px tiles and 2 px padding
        assert (width, height) == (2 * (TILE + PAD) + PAD, 2 * (TILE + PAD) + PAD)

        scalar_tags = _json(base, "/data/plugin/scalars/tags")[run]
        for tag in ("ldam/raw/features.0/activation", "ldam/nonfinite_resets"):
            assert tag in scalar_tags, sorted(scalar_tags)
            series = _json(base, "/data/plugin/scalars/scalars", run=run, tag=tag)  # [[wall_time, step, value]]
            assert [step for _, step, _ in series] == [2, 4], tag
        assert [value for _, _, value in _json(base, "/data/plugin/scalars/scalars", run=run,
                                               tag="ldam/nonfinite_resets")] == [0.0, 0.0]
