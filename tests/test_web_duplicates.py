"""The web app's Duplicates page: computed in the background with progress, every copy's facts, the keeper and
why, choosing another keeper and moving the others into the review folder (CSRF), undo; the API through the
framework's test client and the page in headless Chromium against a real `landmark serve`."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import headless_chromium, landmark_serve, scene
from landmark_search.cli import app as cli

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from landmark_search.web.app import create_app  # noqa: E402
from landmark_search.web.library import Library, ServeOptions  # noqa: E402


def _library(root: Path) -> Path:
    """One picture in four files (an original with camera EXIF, its exact copy, a q50 re-save with a sidecar,
    a crop) and two other pictures; indexed with the built-in model."""
    lib = root / "lib"
    (lib / "copies").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0132] = "Canon", "EOS 5D", "2021:06:01 10:00:00"
    img = scene(21, (320, 224))
    img.save(lib / "original.jpg", quality=90, exif=exif.tobytes())
    shutil.copy(lib / "original.jpg", lib / "copies" / "copy.jpg")
    img.save(lib / "copies" / "q50.jpg", quality=50)
    (lib / "copies" / "q50.jpg.json").write_text('{"mine": 1}')
    img.crop((12, 8, 308, 216)).save(lib / "copies" / "crop.jpg", quality=90)
    scene(22, (320, 224)).save(lib / "other1.jpg", quality=90)
    scene(23, (320, 224)).save(lib / "other2.jpg", quality=90)
    for n, p in enumerate(sorted(lib.rglob("*.jpg"), key=lambda p: p.name != "original.jpg")):
        os.utime(p, (1_600_000_000 + n, 1_600_000_000 + n))  # the original is the oldest file
    result = CliRunner().invoke(cli, ["index", str(lib), "--index", str(root / "idx"), "-q"])
    assert result.exit_code == 0, result.output
    return lib


def _wait(client) -> dict:
    body = client.get("/api/duplicates", params={"wait": 60}).json()
    assert body["state"] == "ready", body
    return body


def test_page_answers_at_once_then_moves_the_others_and_undo_brings_them_back(tmp_path):
    lib, review = _library(tmp_path), tmp_path / "review"
    library = Library.open(tmp_path / "idx", ServeOptions(review_dir=review))
    try:
        with TestClient(create_app(library), base_url="http://127.0.0.1") as client:
            started = time.monotonic()
            page = client.get("/duplicates")
            assert page.status_code == 200 and time.monotonic() - started < 1.0
            assert "Looking for duplicates in the background" in page.text or "group(s) among" in page.text
            body = _wait(client)
            (group,) = body["groups"]
            assert group["keep"] == str(lib / "original.jpg") and body["review_dir"] == str(review)
            members = {Path(m["path"]).name: m for m in group["members"]}
            assert members["q50.jpg"]["jpeg_quality"] == 50 and members["q50.jpg"]["lost_on"] == "quality"
            assert members["original.jpg"]["camera"] == "Canon EOS 5D"
            page = client.get("/duplicates").text
            assert page.count('<figure class="copy') == 4 and page.count('<figure class="copy keep') == 1
            assert "JPEG q50" in page and "320×224" in page and "taken 2021-06-01 10:00:00" in page

            keep = str(lib / "copies" / "crop.jpg")
            assert client.post("/api/duplicates/move", json={"keep": keep}).status_code == 403
            token = client.get("/api/session").json()["csrf"]
            headers = {"X-CSRF-Token": token}
            assert client.post("/api/duplicates/move", json={"keep": str(lib / "other1.jpg")},
                               headers=headers).status_code == 400  # in no group: nothing moves
            assert client.post("/api/duplicates/move", json={"keep": "/etc/passwd"}, headers=headers).status_code == 404
            moved = client.post("/api/duplicates/move", json={"keep": keep}, headers=headers).json()
            assert sorted(Path(p).name for p in moved["moved"]) == ["copy.jpg", "original.jpg", "q50.jpg"]
            assert (lib / "copies" / "crop.jpg").is_file() and not (lib / "original.jpg").exists()
            assert (review / "original.jpg").is_file() and (review / "copies" / "q50.jpg.json").is_file()
            assert _wait(client)["groups"] == []  # moved photos left the index
            assert client.post("/api/duplicates/undo").status_code == 403
            undone = client.post("/api/duplicates/undo", headers=headers).json()
            assert len(undone["restored"]) == 3 and undone["sidecars"] == 1 and undone["failed"] == []
            assert (lib / "original.jpg").is_file() and (lib / "copies" / "q50.jpg.json").read_text() == '{"mine": 1}'
            (group,) = _wait(client)["groups"]  # indexed again: the group is back, with its keeper
            assert group["keep"] == str(lib / "original.jpg")
    finally:
        library.close()


@pytest.mark.slow
def test_in_chromium_choose_a_keeper_move_and_undo(tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    lib, review = _library(tmp_path), tmp_path / "review"
    with landmark_serve(tmp_path / "idx", "--review-dir", str(review)) as url:
        driver = headless_chromium(tmp_path / "profile")
        wait = WebDriverWait(driver, 60, ignored_exceptions=(StaleElementReferenceException,))  # pages reload
        try:
            driver.get(url + "duplicates")  # answers at once; the page shows the groups when they are ready
            group = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "form.dups"))[0]
            keeper = group.find_element(By.CSS_SELECTOR, "figure.keep")
            assert "original.jpg" in keeper.text and "JPEG q90" in keeper.text and "Canon EOS 5D" in keeper.text
            assert "keep:" in group.find_element(By.TAG_NAME, "h2").text
            copies = group.find_elements(By.CSS_SELECTOR, "figure.copy")
            assert len(copies) == 4
            q50 = next(c for c in copies if "q50.jpg" in c.text)
            assert "lost on quality" in q50.text and "JPEG q50" in q50.text and str(lib / "copies") in q50.text
            crop = next(c for c in copies if "crop.jpg" in c.text)
            said = lambda figure: driver.execute_script(  # noqa: E731 - the word the page draws beside the radio
                "return getComputedStyle(arguments[0], '::before').content", figure.find_element(By.CLASS_NAME, "choice"))
            assert (said(keeper), said(crop)) == ('"keep"', '"move"')
            crop.find_element(By.CSS_SELECTOR, "input[type=radio]").click()
            assert (said(keeper), said(crop)) == ('"move"', '"keep"')  # the page follows the choice
            frame = lambda figure: figure.value_of_css_property("border-top-color")  # noqa: E731
            assert frame(crop) != frame(keeper)
            driver.save_screenshot(str(tmp_path / "chosen.png"))
            group.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            done = wait.until(lambda d: d.find_elements(By.ID, "done"))[0]
            assert "kept crop.jpg, moved 3 photo(s)" in done.text
            driver.save_screenshot(str(tmp_path / "moved.png"))
            assert sorted(p.name for p in review.rglob("*.jpg")) == ["copy.jpg", "original.jpg", "q50.jpg"]
            wait.until(lambda d: d.find_elements(By.ID, "undo"))[0].click()
            wait.until(lambda d: "put back" in d.find_element(By.ID, "done").text)
            assert "put back 3 photo(s)" in driver.find_element(By.ID, "done").text
        finally:
            driver.quit()
    assert (lib / "original.jpg").is_file() and (lib / "copies" / "q50.jpg.json").read_text() == '{"mine": 1}'
    assert not list(review.rglob("*.jpg"))
