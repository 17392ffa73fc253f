"""`landmark serve`: the JSON API through the framework's test client, abuse of paths and uploads, naming a group
(sidecars as `landmark tag` writes them), and one end-to-end run of the real server in headless Chromium."""

from __future__ import annotations

import html
import io
import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import headless_chromium, landmark_serve
from landmark_search.cli import app as cli

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from landmark_search.web.app import create_app  # noqa: E402
from landmark_search.web.library import Library, ServeOptions  # noqa: E402

runner = CliRunner()
BASE = "http://127.0.0.1"


def _photo(path: Path, seed: int, size=(80, 60), orientation: int | None = None) -> Path:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    if orientation:
        exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90, exif=exif.tobytes())
    return path


@pytest.fixture(scope="module")
def library_dir(synth_data, trained_run, tmp_path_factory):
    """A library: the synthetic test photos (3 landmarks), a few noise photos, a link that leads outside, and a
    photo that became unreadable after it was indexed; indexed with the trained (calibrated) model."""
    root = tmp_path_factory.mktemp("web")
    lib = root / "lib"
    shutil.copytree(synth_data / "test", lib / "landmarks")
    for i in range(4):
        _photo(lib / "everyday" / f"noise{i}.jpg", i)
    _photo(lib / "everyday" / "turned.jpg", 9, size=(90, 40), orientation=6)  # EXIF: rotate 90 degrees
    outside = _photo(root / "private" / "secret.jpg", 99)
    (lib / "everyday" / "link-out.jpg").symlink_to(outside)
    broken = _photo(lib / "everyday" / "broken.jpg", 7)
    index = root / "idx"
    result = runner.invoke(cli, ["index", str(lib), "--index", str(index), "--model",
                                 str(trained_run / "best.pt"), "-q"])
    assert result.exit_code == 0, result.output
    broken.write_bytes(b"not a jpeg any more")
    return root


@pytest.fixture(scope="module")
def client(library_dir):
    library = Library.open(library_dir / "idx")
    with TestClient(create_app(library), base_url=BASE) as c:
        yield c
    library.close()


def _paths(client, **params) -> list[dict]:
    body = client.get("/api/photos", params={"limit": 500, **params}).json()
    assert body["total"] == len(body["photos"])
    return body["photos"]


def test_api_photos_pages_and_filters(client, library_dir):
    everything = _paths(client)
    indexed = {p["path"] for p in everything}
    assert len(everything) == 18 + 4 + 1 + 1 + 1  # landmarks, noise, turned, link-out, broken
    assert [p["path"] for p in everything] == sorted(indexed)
    page = client.get("/api/photos", params={"offset": 5, "limit": 4}).json()
    assert page["total"] == len(everything) and [p["path"] for p in page["photos"]] == sorted(indexed)[5:9]
    labels = {p["label"] for p in everything}
    tag = next(label for label in labels if label)
    assert {p["label"] for p in _paths(client, tag=tag)} == {tag}
    unknown = _paths(client, unknown=True)
    assert all(p["label"] is None for p in unknown)
    assert len(unknown) == sum(p["label"] is None for p in everything)
    assert all(0.0 <= p["confidence"] <= 1.0 for p in everything)
    folder = str(Path(everything[0]["path"]).parent)
    assert all(Path(p["path"]).parent == Path(folder) for p in _paths(client, folder=folder))
    # the folder filter offers the folders above too (lib/landmarks holds only its three class folders)
    landmarks = str(library_dir / "lib" / "landmarks")
    under = len(_paths(client, folder=landmarks))
    assert under == sum(1 for p in everything if p["path"].startswith(landmarks + os.sep)) > 0
    assert f'<option value="{landmarks}" >{landmarks} ({under})</option>' in client.get("/").text


def test_head_answers_as_get_without_a_body(client):
    photo = _paths(client)[0]["path"]
    for url, params in (("/", {}), ("/photo", {"path": photo}), ("/api/original", {"path": photo}),
                        ("/api/photos", {"limit": 2})):
        got, head = client.get(url, params=params), client.head(url, params=params)
        assert got.status_code == head.status_code == 200, (url, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], url
        if url == "/api/original":  # a file: its size, as GET sends it
            assert int(head.headers["content-length"]) == len(got.content) == Path(photo).stat().st_size
    missing = client.head("/photo", params={"path": "/nowhere.jpg"})
    assert missing.status_code == 404 and missing.content == b""


def test_api_similar_is_what_landmark_similar_json_prints(client, library_dir):
    query = next(p["path"] for p in _paths(client) if "/landmarks/" in p["path"])
    api = client.get("/api/similar", params={"path": query, "k": 5})
    assert api.status_code == 200
    result = runner.invoke(cli, ["similar", query, "--index", str(library_dir / "idx"), "-k", "5", "--json"])
    assert result.exit_code == 0, result.output
    assert api.json() == json.loads(result.output)
    assert len(api.json()["hits"]) == 5 and query not in {h["path"] for h in api.json()["hits"]}
    for k in ("0", "-1", "201", "abc"):  # refused in one line, never quietly read as something else
        bad = client.get("/api/similar", params={"path": query, "k": k})
        assert bad.status_code == 400 and bad.json()["error"].startswith("k"), (k, bad.text)


def test_search_finds_a_landmark_by_its_known_place_before_any_geotag(client):
    """The model knows where each landmark is (places.csv: Harbour Arch in Australia, Dome in Agra, India): a search
    for the country or city lists the photos it tagged with that landmark, sidecars without a place or not."""
    labelled = {lab: sorted(p["path"] for p in _paths(client, tag=lab)) for lab in ("Harbour Arch", "Dome")}
    assert labelled["Harbour Arch"] and labelled["Dome"]
    assert sorted(p["path"] for p in _paths(client, q="AUSTRALIA")) == labelled["Harbour Arch"]
    assert sorted(p["path"] for p in _paths(client, q="agra india")) == labelled["Dome"]  # every word
    assert _paths(client, q="agra australia") == []
    page = client.get("/", params={"q": "australia"}).text
    assert all(f"/photo?path={quote(p, safe='')}" in page for p in labelled["Harbour Arch"])


def test_search_by_upload_finds_the_photo_and_keeps_nothing(client, library_dir, tmp_path):
    query = next(p["path"] for p in _paths(client) if "/landmarks/" in p["path"])
    before = set(os.listdir(os.environ.get("TMPDIR", "/tmp")))
    reply = client.post("/api/search", files={"file": ("holiday.jpg", Path(query).read_bytes(), "image/jpeg")},
                        data={"k": "3"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["query"] == "holiday.jpg" and len(body["hits"]) == 3
    assert body["hits"][0]["path"] == query and body["hits"][0]["score"] > 0.999  # one route for the model
    assert not {n for n in set(os.listdir(os.environ.get("TMPDIR", "/tmp"))) - before if "landmark-upload" in n}
    page = client.post("/search", files={"file": ("holiday.jpg", Path(query).read_bytes(), "image/jpeg")})
    assert page.status_code == 200 and query.rsplit("/", 1)[-1] in page.text


@pytest.mark.parametrize("name, data, status, words", [
    ("garbage.jpg", b"\xff\xd8\xff not really", 400, ["garbage.jpg", "not a readable image"]),
    ("notes.txt", b"hello", 415, ["notes.txt", "not a photo type"]),
    ("empty.png", b"", 400, ["empty.png"]),
])
def test_bad_uploads_are_refused_in_one_line(client, name, data, status, words):
    reply = client.post("/api/search", files={"file": (name, data, "application/octet-stream")})
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert "\n" not in error and all(w in error for w in words), error


def test_upload_limits_bytes_before_reading_and_pixels_when_decoding(library_dir):
    library = Library.open(library_dir / "idx", ServeOptions(max_pixels=100 * 100))
    with TestClient(create_app(library), base_url=BASE) as c:
        big = io.BytesIO()
        Image.new("RGB", (300, 200), (200, 100, 50)).save(big, format="JPEG")
        reply = c.post("/api/search", files={"file": ("big.jpg", big.getvalue(), "image/jpeg")})
        assert reply.status_code == 400 and "pixels" in reply.json()["error"], reply.text
        huge = c.post("/api/search", content=b"x" * 10, headers={"Content-Type": "multipart/form-data; boundary=b",
                                                                 "Content-Length": str(10**9)})
        assert huge.status_code == 413
    library.close()


def test_thumbnails_upright_cached_and_revalidated(client, library_dir):
    turned = next(p["path"] for p in _paths(client) if p["path"].endswith("turned.jpg"))
    reply = client.get("/api/thumb", params={"path": turned})
    assert reply.status_code == 200 and reply.headers["content-type"] == "image/jpeg"
    img = Image.open(io.BytesIO(reply.content))
    assert img.height > img.width  # 90x40 stored, EXIF says rotate: shown 40x90
    large = Image.open(io.BytesIO(client.get("/api/thumb", params={"path": turned, "size": "large"}).content))
    assert large.size == (40, 90)  # the photo page's large view never blows a small photo up
    assert "max-age" in reply.headers["cache-control"]
    assert list((library_dir / "idx" / "thumbs").rglob("*.jpg"))
    again = client.get("/api/thumb", params={"path": turned}, headers={"If-None-Match": reply.headers["etag"]})
    assert again.status_code == 304 and not again.content


def test_an_unreadable_photo_shows_a_placeholder_never_a_500(client):
    broken = next(p["path"] for p in _paths(client) if p["path"].endswith("broken.jpg"))
    thumb = client.get("/api/thumb", params={"path": broken})
    assert thumb.status_code == 200 and thumb.headers["x-landmark-placeholder"] == "unreadable"
    assert thumb.headers["cache-control"] == "no-store"
    page = client.get("/photo", params={"path": broken})
    assert page.status_code == 200 and "broken.jpg" in page.text and "not a readable image" in page.text


ATTACKS = [
    "/etc/passwd", "../../../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%2e%2e/%2e%2e/etc/passwd", "",
    "{lib}", "{lib}/landmarks", "{lib}/landmarks/../everyday/noise0.jpg", "{lib}/./everyday/noise0.jpg",
    "{lib}//everyday/noise0.jpg", "{lib}/everyday/noise0.jpg/..", "{lib}/everyday/noise0.jpg\x00.png",
    "{lib}/everyday/link-out.jpg", "{root}/private/secret.jpg", "file://{lib}/everyday/noise0.jpg",
    "everyday/noise0.jpg", "~/.ssh/id_rsa", "{lib}/everyday/noise0.jpg.json",
]


@pytest.mark.parametrize("attack", ATTACKS)
def test_paths_outside_the_indexed_photos_are_404(client, library_dir, attack):
    path = attack.format(lib=library_dir / "lib", root=library_dir)
    for url in ("/api/thumb", "/api/similar", "/api/photo", "/photo", "/api/explain"):
        reply = client.get(url, params={"path": path})
        assert reply.status_code == 404, (url, path, reply.status_code)
        assert b"root:" not in reply.content and b"\xff\xd8" not in reply.content[:2]


def test_no_listing_no_static_escape_and_no_foreign_host(client):
    for url in ("/static/", "/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py", "/api/thumb"):
        reply = client.get(url)
        assert reply.status_code in (404, 400), (url, reply.status_code)
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding


def test_naming_a_group_writes_the_sidecars_landmark_tag_writes(client, library_dir, trained_run):
    photos = [p["path"] for p in _paths(client) if "/everyday/noise" in p["path"]][:2]
    assert client.post("/api/name", json={"paths": photos, "name": "Old Mill"}).status_code == 403
    token = client.get("/api/session").json()["csrf"]
    reply = client.post("/api/name", json={"paths": photos, "name": "Old Mill", "train": True},
                        headers={"X-CSRF-Token": token})
    assert reply.status_code == 200, reply.text
    assert sorted(reply.json()["named"]) == sorted(photos) and not reply.json()["failed"]
    outside = client.post("/api/name", json={"paths": ["/etc/passwd"], "name": "x"}, headers={"X-CSRF-Token": token})
    assert outside.status_code == 404
    named = json.loads(Path(photos[0] + ".json").read_text())["landmark_search"]
    assert named["named"] is True and [t["label"] for t in named["tags"]] == ["Old Mill"]
    train = library_dir / "idx" / "training" / "train" / "Old Mill"
    assert sorted(os.readlink(p) for p in train.iterdir()) == sorted(photos)
    # the same entry `landmark tag` writes, plus "named"; a later model run keeps the name
    other = next(p["path"] for p in _paths(client) if "/landmarks/" in p["path"])  # a photo the model tags
    tagged = runner.invoke(cli, ["tag", photos[0], other, "--model", str(trained_run / "best.pt"), "-q"])
    assert tagged.exit_code == 0, tagged.output
    by_model = json.loads(Path(other + ".json").read_text())["landmark_search"]
    assert set(named) - set(by_model) <= {"named"} and set(by_model) - set(named) <= {"unknown", "nearest", "runner_ups"}
    assert json.loads(Path(photos[0] + ".json").read_text())["landmark_search"] == named
    review = client.get("/api/groups", params={"wait": 60}).json()
    assert review["state"] == "ready"
    assert not {p for g in review["groups"] for p in g["paths"]} & set(photos)  # named: no longer to review
    # the hint teaches the index's own model the named landmarks (`train --extend`; test_training runs it)
    hint = f"landmark train --extend {trained_run / 'best.pt'} --data {library_dir / 'idx' / 'training'}"
    assert hint in html.unescape(client.get("/review").text)
    assert runner.invoke(cli, ["untag", *photos, other]).exit_code == 0
    assert not Path(photos[0] + ".json").exists()


def test_a_new_name_moves_the_photos_training_link_and_no_name_takes_it_out(client, library_dir):
    """The training folder says what the sidecars say: retagging a photo named for training moves its link to the new
    name's folder, removing its landmark takes the link out; the user's own file there stays."""
    photos = [p["path"] for p in _paths(client) if "/everyday/noise" in p["path"]][2:4]
    headers, train = _token(client), library_dir / "idx" / "training" / "train"
    assert client.post("/api/name", json={"paths": photos, "name": "Grain Mil", "train": True},
                       headers=headers).status_code == 200
    (train / "Grain Mil" / "notes.txt").write_text("mine")
    moved = client.post("/api/retag", json={"paths": [photos[0]], "name": "Grain Mill"}, headers=headers).json()
    assert moved["relinked"] == [str(train / "Grain Mill" / Path(photos[0]).name)]
    assert [os.readlink(p) for p in (train / "Grain Mill").iterdir()] == [photos[0]]
    assert sorted(p.name for p in (train / "Grain Mil").iterdir()) == sorted(["notes.txt", Path(photos[1]).name])
    client.post("/api/retag", json={"paths": photos, "name": None}, headers=headers)
    assert [p.name for p in (train / "Grain Mil").iterdir()] == ["notes.txt"] and not (train / "Grain Mill").exists()
    assert client.post("/api/retag", json={"paths": photos, "name": "Grain Mill"}, headers=headers).json()[
        "relinked"] == []  # a photo out of the training folder is not put back by a name given later
    client.post("/api/retag", json={"paths": photos, "name": None}, headers=headers)


def test_every_page_renders(client):
    for url, words in [("/", ["Library", "photo(s)"]), ("/?unknown=1", ["unknown only"]), ("/search", ["Drop a photo"]),
                       ("/review", ["Review"]), ("/duplicates", ["Duplicates"]), ("/map", ["place(s)"]),
                       ("/api/docs", ["JSON API"])]:
        reply = client.get(url)
        assert reply.status_code == 200 and all(w in reply.text for w in words), url
        # one page heading, a way past the menu to it, and the API's description a click away
        assert reply.text.count("<h1") == 1 and '<a class="skip" href="#main">' in reply.text, url
        assert '<main id="main"' in reply.text and 'href="/api/docs"' in reply.text, url
    assert '<label for="file"' in client.get("/search").text  # the file input has a name
    nothing = client.get("/", params={"q": "no-such-words"}).text
    assert "No photo matches these filters" in nothing and "landmark index PHOTOS" not in nothing
    for url in ("/api/labels", "/api/groups", "/api/duplicates", "/api/map", "/api/openapi.json"):
        assert client.get(url).status_code == 200, url


def test_serve_refuses_a_missing_index_in_one_line(tmp_path):
    from conftest import one_line_error

    one_line_error(runner.invoke(cli, ["serve", "--index", str(tmp_path / "none")]), "no index", "landmark index")


# ------------------------------------------------------------------------------------------ a real browser

@pytest.fixture(scope="module")
def served(library_dir, tmp_path_factory):
    """`landmark serve` as a user starts it (a real uvicorn process), over an index built with the built-in
    model, whose review page groups every photo."""
    lib = library_dir / "lib" / "landmarks"
    index = tmp_path_factory.mktemp("served") / "idx"
    assert runner.invoke(cli, ["index", str(lib), "--index", str(index), "-q"]).exit_code == 0
    with landmark_serve(index, "--xmp", "--any-subject", "--min-size", "3") as url:
        yield url, index


@pytest.mark.slow
def test_in_chromium_browse_similar_upload_and_name_a_group(served, library_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = served
    driver = headless_chromium(tmp_path / "profile")
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(url)
        tiles = driver.find_elements(By.CSS_SELECTOR, "#library a.tile")
        assert len(tiles) == 18
        driver.find_element(By.CSS_SELECTOR, "button.pick-all").click()
        boxes = driver.find_elements(By.CSS_SELECTOR, 'input[form="pick"][name=paths]')
        assert len(boxes) == 18 and all(b.is_selected() for b in boxes)
        driver.find_element(By.CSS_SELECTOR, "button.pick-none").click()
        assert not any(b.is_selected() for b in boxes)
        landmark = driver.find_element(By.NAME, "tag")
        landmark.send_keys(Keys.ARROW_DOWN)  # the keyboard moves through the choices without leaving the page
        assert driver.current_url == url and landmark.get_attribute("value")
        landmark.send_keys(Keys.ENTER)  # and Enter applies the choice
        wait.until(lambda d: "tag=" in d.current_url)
        driver.get(url)
        tiles = driver.find_elements(By.CSS_SELECTOR, "#library a.tile")
        first = tiles[0].get_attribute("title")
        tiles[0].click()
        hits = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".hits a.tile"))
        api = json.loads(urllib.request.urlopen(url + "api/similar?" + urllib.parse.urlencode(
            {"path": first, "k": 60})).read())
        assert len(hits) == sum(h["score"] >= 0.6 for h in api["hits"])  # the page stops at cosine 0.6
        assert driver.find_element(By.ID, "original").get_attribute("href").startswith(url + "api/original?")
        driver.find_element(By.ID, "explain").click()
        wait.until(lambda d: d.execute_script("const i = document.getElementById('gradcam');"
                                              "return i && !i.hidden && i.naturalWidth > 0;"))
        driver.save_screenshot(str(tmp_path / "photo.png"))
        driver.find_element(By.ID, "next").click()
        wait.until(lambda d: "/photo?" in d.current_url and first not in urllib.parse.unquote(d.current_url))
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)  # the keyboard walks the listing too
        wait.until(lambda d: urllib.parse.unquote(d.current_url).endswith(first))
        driver.find_element(By.ID, "next").click()
        wait.until(lambda d: first not in urllib.parse.unquote(d.current_url))
        driver.find_element(By.ID, "prev").click()
        wait.until(lambda d: urllib.parse.unquote(d.current_url).endswith(first))
        driver.find_element(By.ID, "retag-name").send_keys("Hawa Mahal")
        driver.find_element(By.ID, "retag-set").click()
        wait.until(lambda d: "done=" in d.current_url)
        assert driver.find_element(By.ID, "headline").text == "Hawa Mahal"
        assert "1 photo(s) now 'Hawa Mahal'" in driver.find_element(By.ID, "done").text
        driver.get(url + "?" + urllib.parse.urlencode({"q": "hawa"}))
        assert [t.get_attribute("title") for t in driver.find_elements(By.CSS_SELECTOR, "#library a.tile")] == [first]
        driver.get(url + "map")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#world .land path")) >= 170
        requested = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert requested and all(u.startswith(url) for u in requested), requested  # nothing from elsewhere
        driver.get(url + "api/docs")
        assert "/api/retag" in driver.find_element(By.TAG_NAME, "table").text
        assert driver.execute_script("return fetch(document.querySelector('link[rel=icon]').href)"
                                     ".then(r => r.status)") == 200
        driver.get(url + "photo?path=/etc/passwd")
        assert "is not a photo of this library" in driver.find_element(By.ID, "problem").text

        query = tmp_path / "query.jpg"
        shutil.copyfile(first, query)
        driver.get(url + "search")
        driver.find_element(By.ID, "file").send_keys(str(query))  # choosing a file submits the form
        wait.until(ec.presence_of_element_located((By.ID, "results")))
        assert "query.jpg" in driver.find_element(By.ID, "results").text
        assert driver.execute_script("return document.querySelector('#query img').naturalWidth") > 0  # beside
        scores = [float(e.text) for e in driver.find_elements(By.CSS_SELECTOR, ".hits .conf")]
        assert scores and scores[0] > 0.99 and min(scores) >= 0.6

        driver.get(url + "review")  # grouped in the background: the page shows progress, then reloads itself
        group = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#groups form.group")))
        names = [h.text.split(" · ")[0] for h in driver.find_elements(By.CSS_SELECTOR, "#groups form.group h2")]
        boxes = group.find_elements(By.NAME, "paths")
        members = [box.get_attribute("value") for box in boxes]
        assert len(members) >= 3 and all(box.is_selected() for box in boxes)
        group.find_element(By.CLASS_NAME, "pick-none").click()
        assert not any(box.is_selected() for box in boxes)
        group.find_element(By.CLASS_NAME, "pick-all").click()
        assert all(box.is_selected() for box in boxes)
        alone = driver.find_elements(By.CSS_SELECTOR, "#alone-section form input[name=paths]")
        assert not any(box.is_selected() for box in alone)  # alike to no other: its own section, nothing ticked
        group.find_element(By.NAME, "name").send_keys("Stone Arch")
        group.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        done = wait.until(ec.presence_of_element_located((By.ID, "done")))
        assert f"named {len(members)} photo(s)" in done.text
        left = [h.text.split(" · ")[0] for h in driver.find_elements(By.CSS_SELECTOR, "#groups form.group h2")]
        assert left == names[1:]  # the other groups keep their numbers
        driver.save_screenshot(str(tmp_path / "review.png"))
    finally:
        driver.quit()
    assert json.loads(Path(first + ".json").read_text())["landmark_search"]["named"] is True
    for photo in members:  # the same sidecars `landmark tag --xmp` writes: JSON and XMP keywords
        entry = json.loads(Path(photo + ".json").read_text())["landmark_search"]
        assert [t["label"] for t in entry["tags"]] == ["Stone Arch"] and entry["named"] is True
        assert "Landmarks|Stone Arch" in Path(photo + ".xmp").read_text()
    assert runner.invoke(cli, ["untag", "--xmp", str(library_dir / "lib" / "landmarks")]).exit_code == 0


def test_the_review_form_needs_its_token_and_says_what_it_refused(client):
    assert client.post("/review/name", data={"name": "X", "paths": []}).status_code == 403
    token = client.get("/api/session").json()["csrf"]
    reply = client.post("/review/name", data={"csrf": token, "name": "Old Mill"}, follow_redirects=False)
    assert reply.status_code == 303 and "nothing+named" in reply.headers["location"]
    page = client.get(reply.headers["location"])
    assert ('<p class="done not-all" id="done" role="alert">nothing named: choose at least one photo'
            in page.text)  # said as a problem, not in the green of a success


# ------------------------------------------------------------------------------------------ fixing the library

def _token(client) -> dict:
    return {"X-CSRF-Token": client.get("/api/session").json()["csrf"]}


def test_retag_sets_and_removes_a_landmark_by_hand_as_landmark_tag_writes_it(client, library_dir, trained_run):
    from conftest import exiftool_json

    folder = sorted((library_dir / "lib" / "landmarks").iterdir())[0]
    model = ["--model", str(trained_run / "best.pt"), "-q"]
    assert runner.invoke(cli, ["tag", str(folder), "--xmp", *model]).exit_code == 0  # this folder uses XMP
    photo = str(sorted(folder.glob("*.jpg"))[0])
    model_label = client.get("/api/photo", params={"path": photo}).json()["label"]
    body = {"paths": [photo], "name": "Hawa Mahal"}
    assert client.post("/api/retag", json=body).status_code == 403
    for bad in ({"paths": photo, "name": "x"}, {"paths": [photo]}, {"paths": [photo], "name": 3}, [photo]):
        reply = client.post("/api/retag", json=bad, headers=_token(client))
        assert reply.status_code == 400 and "name" in reply.json()["error"], (bad, reply.text)

    reply = client.post("/api/retag", json=body, headers=_token(client))
    assert reply.status_code == 200 and reply.json()["retagged"] == [photo], reply.text
    entry = json.loads(Path(photo + ".json").read_text())["landmark_search"]
    assert entry["named"] is True and [t["label"] for t in entry["tags"]] == ["Hawa Mahal"]
    assert exiftool_json(Path(photo + ".xmp"), "-HierarchicalSubject")["HierarchicalSubject"] == "Landmarks|Hawa Mahal"
    assert [p["path"] for p in _paths(client, tag="Hawa Mahal")] == [photo]  # the index knows at once
    assert ("Hawa Mahal", 1) in [(x["label"], x["count"]) for x in client.get("/api/labels").json()["labels"]]
    page = client.get("/photo", params={"path": photo}).text
    assert '<h1 id="headline">Hawa Mahal</h1>' in page and "given by hand" in page
    assert runner.invoke(cli, ["tag", str(folder), "--xmp", *model]).exit_code == 0  # a later run keeps the name
    assert json.loads(Path(photo + ".json").read_text())["landmark_search"]["tags"][0]["label"] == "Hawa Mahal"

    reply = client.post("/api/retag", json={"paths": [photo], "name": None}, headers=_token(client))
    assert reply.status_code == 200, reply.text
    entry = json.loads(Path(photo + ".json").read_text())["landmark_search"]
    assert entry["named"] is True and entry["tags"] == []
    assert not Path(photo + ".xmp").exists()  # our keywords were all it held: the file this tool created goes
    assert not _paths(client, tag="Hawa Mahal") and photo in {p["path"] for p in _paths(client, unknown=True)}
    assert '<h1 id="headline">No landmark</h1>' in client.get("/photo", params={"path": photo}).text

    other = str(sorted(folder.glob("*.jpg"))[1])  # never tagged, beside photos `tag --xmp` tagged: XMP too
    assert runner.invoke(cli, ["untag", "--xmp", other]).exit_code == 0 and not Path(other + ".json").exists()
    assert client.post("/api/retag", json={"paths": [other], "name": "Jal Mahal"}, headers=_token(client)).is_success
    assert "Landmarks|Jal Mahal" in exiftool_json(Path(other + ".xmp"), "-HierarchicalSubject")["HierarchicalSubject"]
    assert runner.invoke(cli, ["untag", "--xmp", str(folder)]).exit_code == 0
    assert not Path(photo + ".json").exists() and not Path(photo + ".xmp").exists()
    lib = library_dir / "lib"
    assert runner.invoke(cli, ["index", str(lib), "--index", str(library_dir / "idx"), *model]).exit_code == 0
    assert client.get("/api/photo", params={"path": photo}).json()["label"] == model_label  # the model's again


def test_a_name_goes_into_xmp_in_a_folder_never_tagged_when_the_library_uses_xmp(client, library_dir, trained_run):
    """No sidecar beside the photo says anything; the library's XMP keywords ("Landmarks|...", read by the index)
    do: a name given in the app reaches digiKam/Lightroom there too."""
    from conftest import exiftool_json

    folders = sorted((library_dir / "lib" / "landmarks").iterdir())
    tagged, bare = folders[0], next(f for f in folders[1:] if not list(f.glob("*.json")))
    model = ["--model", str(trained_run / "best.pt"), "-q"]
    index = ["index", str(library_dir / "lib"), "--index", str(library_dir / "idx"), *model]
    assert runner.invoke(cli, ["tag", str(tagged), "--xmp", *model]).exit_code == 0
    assert runner.invoke(cli, index).exit_code == 0  # the index reads the keywords
    photo = str(sorted(bare.glob("*.jpg"))[0])
    try:
        assert client.post("/api/retag", json={"paths": [photo], "name": "Jal Mahal"}, headers=_token(client)).is_success
        assert exiftool_json(Path(photo + ".xmp"), "-HierarchicalSubject")["HierarchicalSubject"] == "Landmarks|Jal Mahal"
    finally:
        assert runner.invoke(cli, ["untag", "--xmp", str(tagged), photo]).exit_code == 0
        assert runner.invoke(cli, index).exit_code == 0
    assert not Path(photo + ".xmp").exists() and not list(tagged.glob("*.xmp"))


def test_the_retag_form_changes_ticked_photos_and_says_so(client, library_dir):
    photos = [p["path"] for p in _paths(client) if "/everyday/noise" in p["path"]][:2]
    form = {"csrf": _token(client)["X-CSRF-Token"], "paths": photos, "name": "Old Mill", "back": "/?q=noise"}
    assert client.post("/retag", data={**form, "csrf": "wrong"}).status_code == 403
    reply = client.post("/retag", data=form, follow_redirects=False)
    assert reply.status_code == 303 and reply.headers["location"].startswith("/?q=noise&done=")
    assert "2 photo(s) now &#39;Old Mill&#39;" in client.get(reply.headers["location"]).text
    for off in ("//evil.example/x", "/\\evil.example/x", "https://evil.example/"):
        away = client.post("/retag", data={**form, "back": off, "remove": "1"}, follow_redirects=False)
        assert away.headers["location"].startswith("/?done=")  # never a redirect off the app
    assert all(json.loads(Path(p + ".json").read_text())["landmark_search"]["tags"] == [] for p in photos)
    assert not any(Path(p + ".xmp").exists() for p in photos)  # nothing beside them uses XMP
    assert runner.invoke(cli, ["untag", *photos]).exit_code == 0


@pytest.fixture(scope="module")
def dated(trained_run, tmp_path_factory):
    """A library whose photos carry capture times (one only its file time), the user's own XMP and JSON keywords,
    and a place inherited from a photo of the same trip; indexed, with a client."""
    from test_places import write_photo

    root = tmp_path_factory.mktemp("dated")
    lib = root / "lib"
    when = {"c_first.jpg": datetime(2021, 3, 5, 9), "a_middle.jpg": datetime(2023, 5, 1, 12),
            "b_last.jpg": datetime(2024, 1, 2, 8)}
    for name, taken in when.items():
        write_photo(lib / name, taken=taken)
    no_exif = _photo(lib / "d_file_time.jpg", 4)
    os.utime(no_exif, (datetime(2022, 7, 1).timestamp(),) * 2)
    (lib / "a_middle.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag>'
        '<rdf:li>grandmother</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>')
    (lib / "b_last.jpg.json").write_text(json.dumps({"keywords": ["picnic"], "landmark_search": {
        "version": 1, "tags": [], "place": {"name": "Gate of India", "latitude": 18.9, "longitude": 72.8,
                                            "from": "time: a_middle.jpg", "minutes": 12.0}}}))
    index = root / "idx"
    assert runner.invoke(cli, ["index", str(lib), "--index", str(index), "--model",
                               str(trained_run / "best.pt"), "-q"]).exit_code == 0
    library = Library.open(index)
    with TestClient(create_app(library), base_url=BASE) as c:
        yield c, lib, index
    library.close()


def test_sort_by_capture_time_and_jump_to_a_month(dated):
    client, lib, _ = dated
    order = ["c_first.jpg", "d_file_time.jpg", "a_middle.jpg", "b_last.jpg"]  # 2021, 2022 (file time), 2023, 2024
    assert [Path(p["path"]).name for p in _paths(client, sort="taken")] == order
    assert [Path(p["path"]).name for p in _paths(client, sort="-taken")] == order[::-1]
    bad = client.get("/api/photos", params={"sort": "size"})
    assert bad.status_code == 400 and "taken" in bad.json()["error"]
    page = client.get("/", params={"sort": "-taken", "month": "2022-07"}).text
    assert page.index("d_file_time.jpg") < page.index("c_first.jpg") and "a_middle.jpg" not in page
    assert '<option value="2023-05"' in page
    photo = client.get("/photo", params={"path": str(lib / "a_middle.jpg"), "sort": "taken"}).text
    before = quote(str(lib / "d_file_time.jpg"), safe="")
    assert f'id="prev" rel="prev" href="/photo?path={before}&amp;sort=taken"' in photo
    assert f'href="/photo?path={quote(str(lib / "b_last.jpg"), safe="")}&amp;sort=taken"' in photo


def test_search_finds_the_users_own_keywords_places_and_file_names(dated, trained_run):
    client, lib, index = dated
    found = lambda q: sorted(Path(p["path"]).name for p in _paths(client, q=q))  # noqa: E731
    assert found("GRANDMOTHER") == ["a_middle.jpg"]  # the user's XMP keyword, any case
    assert found("picnic") == found("gate india") == ["b_last.jpg"]  # JSON keyword; place, every word
    assert found("file_time") == ["d_file_time.jpg"] and found("50%") == []  # _ and % are plain characters
    (lib / "c_first.jpg.xmp").write_text((lib / "a_middle.jpg.xmp").read_text().replace("grandmother", "wedding"))
    assert found("wedding") == []  # read when indexed: the photo did not change, its sidecar did
    assert runner.invoke(cli, ["index", str(lib), "--index", str(index), "--model",
                               str(trained_run / "best.pt"), "-q"]).exit_code == 0
    assert found("wedding") == ["c_first.jpg"]


def test_photo_page_links_the_original_and_says_where_its_place_came_from(dated):
    client, lib, _ = dated
    photo = str(lib / "b_last.jpg")
    page = client.get("/photo", params={"path": photo}).text
    assert "place inherited from a_middle.jpg, taken 12 minute(s) earlier" in page
    assert f'href="/api/original?path={quote(photo, safe="")}"' in page
    original = client.get("/api/original", params={"path": photo})
    assert original.status_code == 200 and original.content == Path(photo).read_bytes()
    assert original.headers["content-type"] == "image/jpeg"
    assert client.get("/api/original", params={"path": str(lib / "b_last.jpg.json")}).status_code == 404


def test_api_docs_favicon_and_error_pages_need_nothing_from_elsewhere(client):
    docs = client.get("/api/docs")
    assert docs.status_code == 200 and "/api/retag" in docs.text and "/api/openapi.json" in docs.text
    assert "Every landmark label with its photo count" in docs.text and "One indexed photo:" in docs.text
    assert "http://" not in docs.text and "https://" not in docs.text and "<script src=\"/static/app.js\"" in docs.text
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    page = client.get("/photo", params={"path": "/etc/passwd"})
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "is not a photo of this library" in page.text and "<header>" in page.text
    api = client.get("/api/photo", params={"path": "/etc/passwd"})
    assert api.status_code == 404 and "is not a photo" in api.json()["error"]
    for url, status, words in (("/nowhere", 404, "/nowhere: no such page"), ("/?offset=abc", 400, "offset: "),
                               ("/photo", 400, "path: field required")):
        page = client.get(url)  # a page answers with a page, in one line, and is never kept for Back
        assert page.status_code == status and page.headers["content-type"].startswith("text/html"), url
        assert words in page.text and "<header>" in page.text and page.headers["cache-control"] == "no-store"
    bad = client.get("/api/photos", params={"offset": "abc"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("offset: ")
    assert client.get("/api/nowhere").json()["error"] == "/api/nowhere: no such page here; the library starts at /"


def test_the_map_draws_natural_earth_offline_and_clusters_markers_the_same_in_the_cli(dated, tmp_path):
    from test_places import write_photo

    from landmark_search.tagging import TagOptions, name_photos

    client, lib, _ = dated
    basemap = client.get("/api/basemap").json()
    assert basemap["type"] == "FeatureCollection" and len(basemap["features"]) >= 170
    india = next(f for f in basemap["features"] if f["properties"]["name"] == "India")
    lon, lat = india["geometry"]["coordinates"][0][0][0] if india["geometry"]["type"] == "MultiPolygon" else \
        india["geometry"]["coordinates"][0][0]
    assert 68 < lon < 98 and 6 < lat < 36
    page = client.get("/map").text
    assert page.count("<path d=") == len(basemap["features"]) and "Gate of India" in page
    assert 'href="/photo?path=' in page and "http://" not in page and "https://" not in page

    trip = tmp_path / "trip"
    write_photo(trip / "eiffel.jpg", gps=(48.8584, 2.2945))
    write_photo(trip / "versailles.jpg", gps=(48.8049, 2.1204))  # 14 km away: its own place, the same cluster
    opera = write_photo(trip / "opera.jpg", gps=(-33.8568, 151.2153))
    name_photos([opera], "Sydney Opera House", TagOptions())  # a name given by hand names its place
    result = runner.invoke(cli, ["map", str(trip), "--out", str(tmp_path / "map.html")])
    assert result.exit_code == 0 and "3 place(s)" in result.output, result.output
    standalone = (tmp_path / "map.html").read_text()
    assert 'title="Sydney Opera House: 1 photo(s)"' in standalone
    assert standalone.count('class="marker cluster"') == 1 and standalone.count('class="marker"') == 1
    assert "http://" not in standalone and "https://" not in standalone
    land = lambda html: html[html.index('<g class="land">'):html.index("</g>")]  # noqa: E731
    assert land(standalone) == land(page)  # one template draws both


def test_the_map_shows_a_place_a_sidecar_gained_while_the_app_ran(dated):
    """`landmark tag --geotag` writes sidecars, not the index: the map notices by the folder's time, no index run."""
    client, lib, _ = dated
    names = lambda: {p["name"] for p in client.get("/api/map").json()["places"]}  # noqa: E731
    assert "Tinum" not in names()
    side, temp = lib / "d_file_time.jpg.json", lib / ".d_file_time.jpg.json.tmp"
    temp.write_text(json.dumps({"landmark_search": {"version": 1, "tags": [], "place": {
        "name": "Tinum", "latitude": 20.68, "longitude": -88.57}}}))
    os.utime(lib, ns=(1, 1))  # a folder time no clock tick can repeat, then the rename sets it again
    os.replace(temp, side)
    try:
        assert "Tinum" in names()
    finally:
        side.unlink()
    assert "Tinum" not in names()


def test_the_readmes_csrf_recipe_works_with_curl(served, library_dir, tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    script = readme.split("<!-- csrf-curl -->\n```sh\n", 1)[1].split("```", 1)[0]
    url, _ = served
    photo = str(sorted((library_dir / "lib" / "landmarks").rglob("*.jpg"))[0])
    script = script.replace("URL=http://127.0.0.1:8765", f"URL={url.rstrip('/')}").replace(
        "/photos/IMG_0001.jpg", photo)
    ran = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0 and json.loads(ran.stdout)["retagged"] == [photo], (ran.stdout, ran.stderr)
    assert json.loads(Path(photo + ".json").read_text())["landmark_search"]["tags"][0]["label"] == "Hawa Mahal"
    assert runner.invoke(cli, ["untag", "--xmp", photo]).exit_code == 0
