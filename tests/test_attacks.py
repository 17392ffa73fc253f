"""Crafted input, as an attacker or a damaged library would give it: a RAW built to make the preview scan slow,
requests from another site's page, sidecars with values of the wrong type, a places.csv field past the CSV limit,
positions kept where --geotag must see them, temp files a killed run left, a busy port. Each answer is one line
or a 4xx, and the pages still render."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import exiftool, exiftool_json, one_line_error
from landmark_search.cli import app as cli
from landmark_search.photos.images import load_image
from landmark_search.errors import BadImageError

runner = CliRunner()
BASE = "http://127.0.0.1"


# ------------------------------------------------------------------------------------------ the RAW preview scan

@pytest.mark.parametrize("unit", [
    b"\xff\xd8\xff\xda\x00\x02",  # a start marker and an empty scan, over and over
    b"\xff\xd8\xff\xfe\x00\x04",  # start markers inside one long chain of comment segments
    b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x11\x00\xff\xda\x00\x02",  # frames whose scan never ends
])
def test_a_crafted_raw_is_refused_in_linear_time(tmp_path, unit):
    nef = tmp_path / "DSC_0001.NEF"
    nef.write_bytes(unit * (1_000_000 // len(unit)))
    start = time.perf_counter()
    with pytest.raises(BadImageError, match="without an embedded JPEG preview"):
        load_image(nef)
    assert time.perf_counter() - start < 1.0


def test_a_real_preview_after_much_junk_is_still_found(tmp_path):
    preview = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(preview, "JPEG")
    nef = tmp_path / "DSC_0002.NEF"
    nef.write_bytes(b"\xff\xd8\xff\xfe\x00\x04" * 100 + os.urandom(5000) + preview.getvalue() + b"\0" * 100)
    assert load_image(nef).size == (64, 48)


# ------------------------------------------------------------------------------------------ the web app

@pytest.fixture(scope="module")
def web(synth_data, trained_run, tmp_path_factory):
    """A library of three photos, indexed with the trained model, and a client that sees 500s as responses."""
    from fastapi.testclient import TestClient

    from landmark_search.web.app import create_app
    from landmark_search.web.library import Library

    root = tmp_path_factory.mktemp("attacks")
    photos = sorted((synth_data / "test").rglob("*.jpg"))[:3]
    for i, photo in enumerate(photos):
        shutil.copy(photo, root / f"photo{i}.jpg")
    result = runner.invoke(cli, ["index", str(root), "--index", str(root / "idx"), "--model",
                                 str(trained_run / "best.pt"), "-q"])
    assert result.exit_code == 0, result.output
    library = Library.open(root / "idx")
    with TestClient(create_app(library), base_url=BASE, raise_server_exceptions=False) as client:
        yield client, root
    library.close()


def _upload(root: Path) -> dict:
    return {"file": ("query.jpg", (root / "photo0.jpg").read_bytes(), "image/jpeg")}


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"}, {"Origin": "null"},
                                     {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                                     {"Origin": "http://127.0.0.1:9999"}])
def test_another_sites_page_cannot_post_an_upload(web, headers):
    client, root = web
    for url in ("/api/search", "/search"):
        reply = client.post(url, files=_upload(root), headers=headers)
        assert reply.status_code == 403 and "another site" in reply.json()["error"], (url, headers, reply.text)


def test_the_apps_own_pages_and_curl_still_upload(web):
    client, root = web
    for headers in ({}, {"Origin": BASE}, {"Sec-Fetch-Site": "same-origin", "Origin": BASE}):
        assert client.post("/api/search", files=_upload(root), headers=headers).status_code == 200, headers
        assert client.post("/search", files=_upload(root), headers=headers).status_code == 200, headers


def test_an_offset_past_any_integer_is_an_empty_page(web):
    client, _ = web
    huge = "99999999999999999999999"
    reply = client.get("/api/photos", params={"offset": huge})
    assert reply.status_code == 200 and reply.json()["photos"] == [] and reply.json()["total"] == 3
    page = client.get("/", params={"offset": huge})
    assert page.status_code == 200 and "Library" in page.text


POISON = [  # our entry in a photo's sidecar, and whether the page shows the tag "Old Mill"
    ({"place": {"latitude": "abc", "longitude": 2.0, "name": "Nowhere"}}, False),
    ({"place": {"latitude": 91.0, "longitude": 2.0, "name": "Nowhere"}}, False),
    ({"place": {"latitude": True, "longitude": [1], "name": "Nowhere"}}, False),
    ({"place": "Nowhere"}, False),
    ({"tags": [{"label": "Old Mill", "confidence": "high", "score": "x"}, {"label": 5}, "text", None]}, True),
    ({"tags": "Old Mill"}, False),
    ({"tags": [{"label": "Old Mill", "confidence": 1e300, "score": -1}], "named": "yes"}, True),
]


@pytest.mark.parametrize("poison, shows_tag", POISON)
def test_sidecar_values_of_the_wrong_type_never_break_a_page(web, poison, shows_tag, tmp_path):
    client, root = web
    photo = root / "photo1.jpg"
    sidecar = Path(f"{photo}.json")
    sidecar.write_text(json.dumps({"landmark_search": {"version": 1, **poison}}), encoding="utf-8")
    try:
        page = client.get("/photo", params={"path": str(photo)})
        assert page.status_code == 200 and "photo1.jpg" in page.text, page.text[-500:]
        assert ("Old Mill" in page.text) == shows_tag and "Nowhere" not in page.text
        world = client.get("/api/map")
        assert world.status_code == 200 and world.json()["places"] == [], world.text
        assert client.get("/map").status_code == 200
        drawn = runner.invoke(cli, ["map", str(photo), "--out", str(tmp_path / "map.html")])
        assert drawn.exit_code == 0 and "0 place(s)" in drawn.output, drawn.output
        assert client.get("/review").status_code == 200
    finally:
        sidecar.unlink()


@pytest.mark.parametrize("name", ["é" * 200, "x" * 256, "\ud800"])
def test_a_group_name_no_folder_can_hold_writes_nothing(web, name):
    client, root = web
    token = client.get("/api/session").json()["csrf"]
    photos = [str(root / "photo0.jpg"), str(root / "photo2.jpg")]
    body = json.dumps({"paths": photos, "name": name, "train": True})  # ASCII: "\ud800" stays escaped
    reply = client.post("/api/name", content=body, headers={"X-CSRF-Token": token, "Content-Type": "application/json"})
    assert reply.status_code == 400 and "\n" not in reply.json()["error"], reply.text
    if name.isprintable():  # a form cannot carry a lone surrogate
        form = client.post("/review/name", data={"csrf": token, "name": name, "paths": photos, "train": "1"},
                           follow_redirects=False)
        assert form.status_code == 303 and "nothing+named" in form.headers["location"]
    assert not [p for p in photos if Path(f"{p}.json").exists()]
    assert not (root / "idx" / "training").exists()


# ------------------------------------------------------------------------------------------ the CLI

def test_a_places_field_over_the_csv_limit_is_one_line(synth_data, tmp_path):
    places = tmp_path / "places.csv"
    places.write_text("class,latitude,longitude,name\n00.Tower,48.85,2.29,\"" + "x" * (200 << 10) + "\"\n")
    result = runner.invoke(cli, ["train", "--data", str(synth_data), "--places", str(places),
                                 "--out", str(tmp_path / "run"), "-q"])
    one_line_error(result, str(places), "row 2")
    assert not (tmp_path / "run" / "best.pt").exists()


def test_serve_on_a_busy_port_is_one_line(web):
    _, root = web
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(cli, ["serve", "--index", str(root / "idx"), "--port", str(port)])
    one_line_error(result, f"port {port}", "--port")
    assert "http://" not in result.output


def test_every_writer_sweeps_the_temps_a_killed_run_left(web, trained_run, tmp_path):
    """Our temp names only (a user's `.notes.tmp` stays), stale ones only (a write in progress stays)."""
    from landmark_search.fsutil import STALE_TEMP_SECONDS

    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(web[1] / "photo0.jpg", lib / "a.jpg")
    old = time.time() - STALE_TEMP_SECONDS - 60

    def leave(*names: str) -> list[Path]:
        paths = [lib / n for n in names]
        for p in paths:
            p.write_text("half a sidecar")
            os.utime(p, (old, old))
        return paths

    users = leave(".notes.tmp", "draft.json.tmp")
    fresh = lib / ".a.jpg.json.00c0ffee.tmp"
    for command in (["untag", str(lib)], ["tag", str(lib), "--model", str(trained_run / "best.pt"), "-q"]):
        stale = leave(".a.jpg.json.1a2b3c4d.tmp", ".a.jpg.xmp.deadbeef.tmp", ".a.jpg.landmark-embed.tmp")
        fresh.write_text("a write in progress")
        assert runner.invoke(cli, command).exit_code == 0, command
        assert not [p for p in stale if p.exists()], command
        assert fresh.exists() and all(p.exists() for p in users), command
    index = tmp_path / "idx"
    model = ["--model", str(trained_run / "best.pt")]
    assert runner.invoke(cli, ["index", str(lib), "--index", str(index), *model, "-q"]).exit_code == 0
    left = index / ".model.json.1a2b3c4d.tmp"
    left.write_text("{")  # the index's writer holds its lock: any temp of ours there is an orphan
    shutil.copy(lib / "a.jpg", lib / "b.jpg")
    assert runner.invoke(cli, ["index", str(lib), "--index", str(index), *model, "-q"]).exit_code == 0
    assert not left.exists()


# ------------------------------------------------------------------------------------------ --geotag

def _raf(path: Path, jpeg: bytes) -> Path:
    """A minimal Fujifilm RAF: its header, the JPEG preview, an empty CFA (exiftool reads and writes it)."""
    start = 0x94
    cfa_header = start + len(jpeg)
    head = (b"FUJIFILMCCD-RAW 0201FF129502" + b"X-T3".ljust(32, b"\0") + b"0100" + b"\0" * 20
            + struct.pack(">IIIIII", start, len(jpeg), cfa_header, 16, cfa_header + 16, 16))
    path.write_bytes(head.ljust(start, b"\0") + jpeg + b"\0" * 32)
    return path


PARIS = ("-GPSLatitude=48.8584", "-GPSLatitudeRef=N", "-GPSLongitude=2.2945", "-GPSLongitudeRef=E")
XMP_PARIS = ("-XMP-exif:GPSLatitude=48.8584", "-XMP-exif:GPSLongitude=2.2945")


def test_geotag_leaves_every_photo_that_has_a_position_anywhere(trained_run, synth_data, tmp_path):
    from landmark_search.config import EmbedConfig
    from landmark_search.tagging import TagOptions, tag

    towers = sorted((synth_data / "test" / "00.Tower").glob("*.jpg"))
    lib = tmp_path / "lib"
    lib.mkdir()
    control, embedded, lightroom, digikam = (shutil.copy(towers[i], lib / n) for i, n in
                                             enumerate(("none.jpg", "embedded.jpg", "lightroom.jpg", "digikam.jpg")))
    exiftool("-q", "-overwrite_original", *XMP_PARIS, str(embedded))
    exiftool("-q", "-o", str(lib / "lightroom.xmp"), *XMP_PARIS, str(lightroom))
    exiftool("-q", "-o", str(lib / "digikam.jpg.xmp"), *XMP_PARIS, str(digikam))
    raf = _raf(lib / "DSCF0001.RAF", Path(towers[4]).read_bytes())
    exiftool("-q", "-overwrite_original", *PARIS, str(raf))
    lightroom_xmp = (lib / "lightroom.xmp").read_bytes()
    for photo in (embedded, raf, lib / "lightroom.xmp", lib / "digikam.jpg.xmp"):  # what exiftool reads there
        assert exiftool_json(photo, "-n").get("GPSLatitude") == pytest.approx(48.8584), photo
    assert "GPSLatitude" not in exiftool_json(embedded, "-n", "-EXIF:all")

    summary = tag([lib], str(trained_run / "best.pt"), TagOptions(geotag=True, recall=1.0),
                  EmbedConfig(progress=False, workers=0))
    assert not summary.failed and raf in summary.tagged
    assert summary.geotagged == [Path(control)]  # the one photo with no position
    for photo in (embedded, lightroom, raf):
        assert "GPSLatitude" not in exiftool_json(Path(f"{photo}.xmp"), "-n"), photo  # keywords, no position
        assert "place" not in json.loads(Path(f"{photo}.json").read_text())["landmark_search"]
    assert (lib / "lightroom.xmp").read_bytes() == lightroom_xmp
    assert exiftool_json(lib / "digikam.jpg.xmp", "-n")["GPSLatitude"] == pytest.approx(48.8584)  # keywords added
    assert exiftool_json(Path(f"{control}.xmp"), "-n")["GPSLatitude"] == pytest.approx(48.8584, abs=0.05)


@pytest.mark.slow
def test_in_chromium_a_page_of_another_site_cannot_post_to_the_app(web, tmp_path):
    """The headers a real browser sends: a form on http://localhost:PORT (another site than 127.0.0.1) posting to
    http://127.0.0.1:PORT/search is refused; the same form posting to its own origin is served."""
    import subprocess
    import sys
    import urllib.request

    from conftest import free_port

    browser, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not browser or not driver_path:
        pytest.skip("no Chromium + chromedriver here (Debian: apt-get install chromium chromium-driver)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager must never download a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("landmark")), "serve", "--index",
                               str(web[1] / "idx"), "--port", str(port)], stderr=subprocess.DEVNULL)
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/session", timeout=2).read()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "landmark serve did not start"
                time.sleep(0.3)
        driver = webdriver.Chrome(service=Service(driver_path), options=options)
        answers = {}
        for target in (f"http://127.0.0.1:{port}/search", "/search"):
            driver.get(f"http://localhost:{port}/search")
            driver.execute_script("const f = document.createElement('form'); f.method = 'post';"
                                  "f.enctype = 'multipart/form-data'; f.action = arguments[0];"
                                  "document.body.append(f); f.submit();", target)
            WebDriverWait(driver, 20).until(lambda d: any(w in d.find_element(By.TAG_NAME, "body").text
                                                          for w in ("another site", "send the photo")))
            answers[target] = driver.find_element(By.TAG_NAME, "body").text
        assert "another site" in answers[f"http://127.0.0.1:{port}/search"], answers
        assert "send the photo" in answers["/search"], answers  # served: refused only for the missing file
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)
