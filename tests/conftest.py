"""Shared fixtures: a tiny synthetic dataset and one quickly trained transfer model."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

# Tests never touch the user's cache or the network.
os.environ.setdefault("LANDMARK_WEIGHTS_MIRROR", "http://127.0.0.1:9")


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Session-wide, so that session and module fixtures (trained_run, indexes) run in it too: a
    function-scoped one is set up after them, and they would read and write the user's cache."""
    base = tmp_path_factory.getbasetemp()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))
        mp.setenv("TORCH_HOME", str(base / "torch-home"))
        # nor the user's settings (config.toml, where named indexes live)
        mp.setenv("XDG_CONFIG_HOME", str(base / "xdg-config"))
        mp.delenv("LANDMARK_INDEX_HOME", raising=False)
        yield


SYNTH_PLACES = {"00.Tower": (48.8584, 2.2945), "01.Stone_Arch": (-33.8568, 151.2153), "02.Dome": (27.1751, 78.0421)}
# places.csv's name column: a trained model's one name per class (one differs from its cleaned folder name)
SYNTH_NAMES = {"00.Tower": "Tower", "01.Stone_Arch": "Harbour Arch", "02.Dome": "Dome"}


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """3 classes x 30 photos at 64 px."""
    from landmark_search.data.synth import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synth") / "data"
    make_synthetic_dataset(root, classes=3, per_class=30, image_size=64, seed=0)
    # Where each synthetic landmark "is" (landmark train reads DATA/places.csv; tag --geotag writes it).
    (root / "places.csv").write_text("class,latitude,longitude,name\n" + "".join(
        f"{c},{lat},{lon},{SYNTH_NAMES[c]}\n" for c, (lat, lon) in SYNTH_PLACES.items()), encoding="utf-8")
    return root


@pytest.fixture(scope="session")
def trained_run(synth_data, tmp_path_factory) -> Path:
    """efficientnet_lite0 with a trained head (frozen offline ImageNet backbone)."""
    from landmark_search.config import TrainConfig
    from landmark_search.training import fit

    out = tmp_path_factory.mktemp("runs") / "eff"
    fit(TrainConfig(model="efficientnet_lite0", data=str(synth_data), out=str(out), epochs=12, feature_views=2,
                    image_size=96, quiet=True, workers=0))
    return out


def exiftool(*args: str) -> str:
    """Run exiftool, the reference metadata reader (Debian libimage-exiftool-perl; .ci/run installs it)."""
    import shutil
    import subprocess

    exe = shutil.which("exiftool")
    assert exe, "exiftool is needed as the reference XMP reader: apt-get install libimage-exiftool-perl"
    return subprocess.run([exe, *args], capture_output=True, text=True, check=True).stdout


def exiftool_json(path, *args: str) -> dict:
    """What exiftool reads from one file (`-j`), as a dict."""
    import json

    return json.loads(exiftool("-j", *args, str(path)))[0]


def one_line_error(result, *words: str) -> str:
    """A CLI result that failed with exit code 1 and one line naming `words`; returns that line."""
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def invoke(*args: object, ok: bool = False):
    """`landmark ARGS` in-process, as a user runs it. A crash (any exception but the exit, or a traceback in the
    output) fails the test with its traceback; ok=True also requires exit code 0."""
    import traceback

    from typer.testing import CliRunner

    from landmark_search.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError("".join(traceback.format_exception(*result.exc_info)))
    assert "Traceback" not in result.output, result.output
    if ok:
        assert result.exit_code == 0, result.output
    return result


def unit(x):
    """Rows scaled to length 1, as float32 (what the index stores)."""
    import numpy as np

    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scene(seed: int, size: tuple[int, int] = (160, 112)):
    """A photo-like picture: soft coloured shapes on a gradient, different for each seed."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    w, h = size
    ramp = np.linspace(0, 1, h)[:, None, None] * rng.uniform(40, 120, 3) + rng.uniform(60, 130, 3)
    img = Image.fromarray(np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(9):
        x, y = rng.integers(0, w), rng.integers(0, h)
        r = int(rng.integers(8, 30))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x - r, y - r // 2, x + r, y + r], fill=colour)
    return img.filter(ImageFilter.GaussianBlur(1))


def facade(seed: int, size=(480, 360)) -> Image.Image:
    """A textured 'facade': seeded rectangles and discs of many greys, sharp corners SIFT finds again."""
    import cv2
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 128, np.uint8)
    for _ in range(120):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, size[0])), int(rng.integers(0, size[1]))
        if rng.random() < 0.5:
            cv2.rectangle(img, (x, y), (x + int(rng.integers(8, 50)), y + int(rng.integers(8, 50))), colour, -1)
        else:
            cv2.circle(img, (x, y), int(rng.integers(4, 25)), colour, -1)
    return Image.fromarray(img)


def seen_anew(img: Image.Image) -> Image.Image:
    """The same scene from a step aside: rotated 12 degrees, 0.8 times the size, shifted, then JPEG-like blur."""
    import cv2
    import numpy as np
    from PIL import Image

    a = np.asarray(img)
    m = cv2.getRotationMatrix2D((a.shape[1] / 2, a.shape[0] / 2), 12, 0.8)
    m[:, 2] += (25, -15)
    return Image.fromarray(cv2.GaussianBlur(cv2.warpAffine(a, m, (a.shape[1], a.shape[0])), (3, 3), 0))


def headless_chromium(profile):
    """A headless Chromium driven by Selenium (offline: Selenium Manager never downloads a browser), with its
    profile in `profile`; skips the test where Chromium or chromedriver is not installed."""
    import os
    import shutil

    import pytest

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no Chromium + chromedriver here (Debian: apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


@contextlib.contextmanager
def landmark_serve(index, *args: str):
    """`landmark serve --index INDEX ARGS` as a user starts it (a real uvicorn process on a free port); yields
    its URL once it answers, and stops it after."""
    import subprocess
    import sys
    import time
    import urllib.request

    import pytest

    port = free_port()
    landmark = Path(sys.executable).with_name("landmark")
    proc = subprocess.Popen([str(landmark), "serve", "--index", str(index), "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "api/session", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    pytest.fail(f"landmark serve did not start: {proc.stdout.read().decode()[-2000:]}")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
