"""Screenshot TensorBoard's IMAGES tab with the LDAM sample grids, as used for the README.

The README screenshot was made by training the demo, then running this script on its logs::

    make demo && python examples/tensorboard_screenshot.py --logdir runs/demo --out docs/images/tensorboard_demo.png

It starts ``tensorboard`` on a free localhost port (``--samples_per_plugin images=1000`` so every step's
image is kept), waits until the server serves image tags matching ``--tag-filter``, then has headless
Chromium (Debian: ``apt-get install chromium``) load the images dashboard with that tag filter pre-filled
in the URL and save a screenshot. The server is always stopped afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from typing import IO, Iterator, List, Optional

#: Binaries tried, in order, when ``--chromium`` is not given.
CHROMIUM_NAMES = ("chromium", "chromium-headless-shell", "chromium-browser", "google-chrome",
                  "google-chrome-stable", "chrome")
#: The server is on localhost: ignore any http(s)_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    """Returns a localhost TCP port that was free when asked."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_chromium(explicit: Optional[str] = None) -> str:
    """Finds a Chromium/Chrome binary.

    Args:
        explicit: A path or name given by the user; used as is if it resolves.

    Returns:
        The absolute path of the binary.

    Raises:
        FileNotFoundError: If no candidate is found on ``PATH``.
    """
    for name in ([explicit] if explicit else CHROMIUM_NAMES):
        path = shutil.which(name)
        if path:
            return path
    raise FileNotFoundError(f"no Chromium found (tried {explicit or ', '.join(CHROMIUM_NAMES)}); "
                            "install it, e.g. `apt-get install chromium`, or pass --chromium")


@contextmanager
def tensorboard_server(logdir: str, port: int, log: IO[bytes], samples: str = "images=1000",
                       **popen_kwargs) -> Iterator[subprocess.Popen]:
    """A ``tensorboard`` process serving ``logdir`` on ``127.0.0.1:port``, its output to ``log`` (a file: a
    pipe nobody reads could fill up and block it); always stopped on exit. Also used by the test suite."""
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1", "--port", str(port),
         "--samples_per_plugin", samples],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **popen_kwargs)
    try:
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def image_tags(base: str) -> List[str]:
    """Returns every image tag of every run the server at ``base`` serves."""
    with _OPENER.open(base + "/data/plugin/images/tags", timeout=10) as response:
        runs = json.loads(response.read())
    return sorted({tag for tags in runs.values() for tag in tags})


def wait_for_image_tags(server: subprocess.Popen, base: str, tag_filter: str, timeout: float) -> List[str]:
    """Polls the server until it serves at least one image tag matching ``tag_filter``.

    Args:
        server: The TensorBoard process; its early exit is an error.
        base: The server's base URL.
        tag_filter: A regular expression, searched in each tag as TensorBoard's own filter does.
        timeout: Seconds to wait.

    Returns:
        The matching tags.

    Raises:
        RuntimeError: If the server exits or no matching tag appears in time.
    """
    deadline = time.monotonic() + timeout
    seen: List[str] = []
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"tensorboard exited with code {server.returncode}")
        try:
            seen = image_tags(base)
            matching = [t for t in seen if re.search(tag_filter, t)]
            if matching:
                return matching
        except (urllib.error.URLError, ConnectionError, OSError, ValueError):
            pass  # not listening yet
        time.sleep(0.5)
    raise RuntimeError(f"no image tag matching {tag_filter!r} served within {timeout:.0f}s (tags: {seen})")


def dashboard_url(base: str, tag_filter: str) -> str:
    """The images dashboard in light mode with the tag filter pre-filled (TensorBoard's hash parameters)."""
    return f"{base}/?darkMode=false#images&tagFilter={urllib.parse.quote(tag_filter, safe='')}"


def screenshot(chromium: str, url: str, out: str, width: int, height: int, budget_ms: int) -> None:
    """Loads ``url`` in headless Chromium and writes a PNG screenshot to ``out``.

    Args:
        chromium: The Chromium binary.
        url: The page to load.
        out: The PNG path to write.
        width: Window width in pixels.
        height: Window height in pixels.
        budget_ms: Virtual time the page gets to load and render before the screenshot.

    Raises:
        RuntimeError: If Chromium fails or writes no image.
    """
    with tempfile.TemporaryDirectory(prefix="tb_screenshot_profile_") as profile:
        cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--hide-scrollbars", "--no-first-run", "--no-default-browser-check", "--mute-audio",
               "--run-all-compositor-stages-before-draw", f"--user-data-dir={profile}",
               f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}",
               f"--screenshot={os.path.abspath(out)}", url]
        if os.path.exists(out):
            os.remove(out)  # so that a stale file cannot pass for a fresh screenshot
        result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=budget_ms / 1000 + 120)
    if result.returncode != 0 or not os.path.isfile(out) or os.path.getsize(out) == 0:
        raise RuntimeError(f"chromium failed (code {result.returncode}):\n{result.stderr[-3000:]}")


def main(argv: Optional[List[str]] = None) -> str:
    """Runs the command line tool; returns the screenshot path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logdir", required=True, help="TensorBoard log directory")
    parser.add_argument("--out", default="tensorboard_images.png", help="PNG file to write")
    parser.add_argument("--port", type=int, default=None, help="server port (default: a free one)")
    parser.add_argument("--width", type=int, default=1600)
    parser.add_argument("--height", type=int, default=1100)
    parser.add_argument("--tag-filter", default="ldam/", help="regex pre-filled in the dashboard's tag filter")
    parser.add_argument("--chromium", default=None, help="Chromium binary (default: auto-detect)")
    parser.add_argument("--budget-ms", type=int, default=20000, help="Chromium's virtual time budget")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.logdir):
        parser.error(f"--logdir {args.logdir!r} is not a directory")
    chromium = find_chromium(args.chromium)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    out_dir = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)

    with tempfile.TemporaryFile() as server_log, tensorboard_server(args.logdir, port, server_log) as server:
        try:
            tags = wait_for_image_tags(server, base, args.tag_filter, args.timeout)
            print(f"tensorboard at {base} serves {len(tags)} image tags matching {args.tag_filter!r}",
                  file=sys.stderr)
            screenshot(chromium, dashboard_url(base, args.tag_filter), args.out, args.width, args.height,
                       args.budget_ms)
        except RuntimeError:
            server_log.seek(0)
            print(server_log.read().decode(errors="replace")[-3000:], file=sys.stderr)
            raise
    print(args.out)
    return args.out


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, RuntimeError, subprocess.TimeoutExpired) as error:
        sys.exit(f"error: {error}")
