"""report.html: every section from a real (tiny) run, honest 'why' messages, valid self-contained HTML."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from landmark_search.config import TrainConfig
from landmark_search.data.synth import make_synthetic_dataset
from landmark_search.errors import DataError
from landmark_search.render.report import MAX_MISTAKES, confused_pairs, write_report
from landmark_search.training import fit

CHROMIUM = Path("/usr/bin/chromium")
# Results first, the configuration dump last.
HEADINGS = ["Training curves", "Test metrics", "Photos of anything else (open set)",
            "Per-class precision, recall and F1",
            "Confusion matrix", "Most-confused class pairs", "Misclassified test photos", "Configuration"]
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Page(HTMLParser):
    """Checks that every element is closed in order, and collects what the tests look at."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.h2: list[str] = []
        self.sections: dict[str, str] = {}  # id -> text
        self.imgs: list[str] = []
        self.external: list[str] = []
        self.table_rows: dict[str, int] = {}
        self._text: list[tuple[str, list[str]]] = []
        self._in_h2 = False
        self._table: str | None = None
        self._in_tbody = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in ("link", "script", "iframe") and (a.get("href") or a.get("src")):
            self.external.append(a.get("href") or a.get("src"))
        if tag == "section":
            self._text.append((a.get("id", ""), []))
        if tag == "table":
            self._table = a.get("id") or a.get("class") or ""
            self.table_rows.setdefault(self._table, 0)
        if tag == "tbody":
            self._in_tbody = True
        if tag == "tr" and self._in_tbody and self._table is not None:
            self.table_rows[self._table] += 1
        self._in_h2 = tag == "h2"
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
            return
        self.stack.pop()
        if tag == "section":
            anchor, parts = self._text.pop()
            self.sections[anchor] = " ".join(parts)
        if tag == "table":
            self._table = None
        if tag == "tbody":
            self._in_tbody = False
        if tag == "h2":
            self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.h2.append(data)
        for _, parts in self._text:
            parts.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    assert not page.errors, page.errors[:5]
    assert not page.stack, f"unclosed elements: {page.stack}"
    return page


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 2-epoch scratch model at 64 px: fast, and weak enough to make mistakes worth showing."""
    root = tmp_path_factory.mktemp("report")
    data = make_synthetic_dataset(root / "data", classes=3, per_class=8, image_size=64, seed=0,
                                  test_fraction=0.5).root
    cfg = TrainConfig(model="scratch", data=str(data), out=str(root / "run"), epochs=2, batch_size=8, image_size=64,
                      workers=0, quiet=True, seed=0)
    return data, fit(cfg).paths.root


def test_report_has_every_section(run: tuple[Path, Path]) -> None:
    data, run_dir = run
    path = write_report(run_dir)
    assert path == run_dir / "report.html"
    page = _parse(path)
    assert page.h2 == HEADINGS
    assert not page.external, "the report must not load anything from outside the file"
    assert not any("missing" in text or "could not be built" in text for text in page.sections.values()), page.sections

    test_report = json.loads((run_dir / "test_report.json").read_text())
    assert page.table_rows["per-class-table"] == len(test_report["class_names"]) == 3
    for name, row in test_report["per_class"].items():
        assert f"{name}" in page.sections["per-class"] and f"{row['recall']:.3f}" in page.sections["per-class"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert f"{metrics['test_accuracy']:.1%}" in page.sections["metrics"]
    assert f"{metrics['test_macro_f1']:.3f}" in page.sections["metrics"]
    assert "batch_size" in page.sections["config"]

    # curves + confusion as PNG, then a photo and its Grad-CAM per misclassified test photo.
    cm = test_report["confusion"]
    wrong = sum(cm[i][j] for i in range(3) for j in range(3) if i != j)
    assert wrong > 0, "a 2-epoch scratch model should make mistakes for this test to mean anything"
    pngs = [s for s in page.imgs if s.startswith("data:image/png;base64,")]
    jpegs = [s for s in page.imgs if s.startswith("data:image/jpeg;base64,")]
    assert len(pngs) == 2 and len(page.imgs) == len(pngs) + len(jpegs)
    assert len(jpegs) == 2 * min(MAX_MISTAKES, wrong)
    assert f"{wrong} of {sum(map(sum, cm))} test photos are misclassified" in page.sections["mistakes"]
    confusion_png = Image.open(io.BytesIO(base64.b64decode(pngs[1].split(",", 1)[1])))
    assert confusion_png.size == Image.open(run_dir / "test_confusion.png").size
    thumb = Image.open(io.BytesIO(base64.b64decode(jpegs[0].split(",", 1)[1])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160
    top = confused_pairs(cm, test_report["class_names"])[0]
    assert f"{top[0]} {top[1]} {top[2]}" in re.sub(r"\s+", " ", page.sections["pairs"])


def test_plots_are_png_bytes_that_grow_with_the_class_count(run: tuple[Path, Path]) -> None:
    from landmark_search.render.plots import confusion_png, curves_png
    from landmark_search.training import read_history

    _, run_dir = run
    curves = Image.open(io.BytesIO(curves_png(read_history(run_dir / "history.csv"))))
    assert curves.format == "PNG" and curves.size == Image.open(run_dir / "curves.png").size
    small = Image.open(io.BytesIO(confusion_png([[2, 1], [0, 3]], ["a", "b"])))
    names = [f"class {i}" for i in range(50)]
    large = Image.open(io.BytesIO(confusion_png([[int(i == j) for j in range(50)] for i in range(50)], names)))
    assert small.format == large.format == "PNG" and large.size[0] > small.size[0]


def test_confused_pairs_are_the_largest_off_diagonal_cells() -> None:
    cm = [[5, 3, 0, 1], [0, 7, 0, 0], [2, 0, 4, 3], [0, 0, 0, 9]]
    names = ["a", "b", "c", "d"]
    pairs = confused_pairs(cm, names, top=3)
    brute = sorted(((cm[i][j], names[i], names[j]) for i in range(4) for j in range(4) if i != j and cm[i][j]),
                   key=lambda t: -t[0])
    assert [(t, p, n) for t, p, n, _ in pairs] == [(t, p, n) for n, t, p in brute[:3]]
    assert pairs[0] == ("a", "b", 3, pytest.approx(3 / 9))
    assert confused_pairs([[3, 0], [0, 4]], ["a", "b"]) == []


def test_missing_pieces_say_why_and_never_crash(run: tuple[Path, Path], tmp_path: Path) -> None:
    data, run_dir = run
    # No data folder where config.json says, and none given: the photo grid explains.
    page = _parse(write_report(run_dir, data=tmp_path / "gone", out=tmp_path / "a.html"))
    assert page.h2 == HEADINGS
    assert "does not exist here; pass --data DIR" in page.sections["mistakes"]
    assert page.table_rows["per-class-table"] == 3, "the table still comes from test_report.json"

    # A dataset without a test split.
    no_test = tmp_path / "no_test"
    shutil.copytree(data / "train", no_test / "train")
    page = _parse(write_report(run_dir, data=no_test, out=tmp_path / "b.html"))
    assert "has no test/ split" in page.sections["mistakes"]

    # A run folder holding only its config: every other section says what is missing.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run_dir / "config.json", bare / "config.json")
    page = _parse(write_report(bare))
    assert page.h2 == HEADINGS
    assert "batch_size" in page.sections["config"]
    assert "curves.png and history.csv are both missing" in page.sections["curves"]
    assert "metrics.json is missing" in page.sections["metrics"]
    assert "best.pt is missing" in page.sections["mistakes"]
    for anchor in ("per-class", "confusion", "pairs"):
        assert "missing" in page.sections[anchor]
    # History alone is enough to re-plot the curves.
    shutil.copy(run_dir / "history.csv", bare / "history.csv")
    page = _parse(write_report(bare))
    assert "epochs; best.pt holds epoch" in page.sections["curves"]
    assert sum(s.startswith("data:image/png;base64,") for s in page.imgs) == 1
    assert sorted(p.name for p in bare.iterdir()) == ["config.json", "history.csv", "report.html"], "no temp files left"


def test_not_a_run_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such run folder"):
        write_report(tmp_path / "nope")
    with pytest.raises(DataError, match="not a training run"):
        write_report(tmp_path)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium to render the page")
def test_report_renders_in_a_browser(run: tuple[Path, Path], tmp_path: Path) -> None:
    _, run_dir = run
    report = write_report(run_dir, out=tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
                    report.resolve().as_uri()], check=True, capture_output=True, timeout=120)
    with Image.open(shot) as img:
        assert img.size == (1280, 2000)
        # A blank or unstyled page is nearly one colour; the report has a dark header, plots and photos.
        colours = img.convert("RGB").resize((320, 500)).getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 200
        assert img.convert("L").crop((0, 0, 1280, 40)).getextrema()[0] < 60, "the dark header bar is drawn"


def test_cli_report(run: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landmark_search.cli import app

    data, run_dir = run
    out = tmp_path / "r.html"
    result = CliRunner().invoke(app, ["report", str(run_dir), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {out}"
    assert _parse(out).h2 == HEADINGS
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 1 and "no such run folder" in result.output
