"""download_dataset against a real local HTTP server that honours (or ignores) Range requests."""

from __future__ import annotations

import hashlib
import io
import socket
import stat
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import free_port
from landmark_search.data.download import _extract, download_dataset, parse_size
from landmark_search.errors import DataError

MEMBERS = [
    "landmark_images/train/00.A/0.png",
    "landmark_images/train/00.A/1.png",
    "landmark_images/train/01.B/0.png",
    "landmark_images/test/00.A/0.png",
    "landmark_images/test/01.B/0.png",
]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


GOOD = [(name, _png(i)) for i, name in enumerate(MEMBERS)]
GOOD_ZIP = _zip(GOOD)


class Handler(BaseHTTPRequestHandler):
    """Serves server.payload; modes: 'normal', 'cut_first' (drop half way on request 1), 'ignore_range',
    'endless' (zeros with no Content-Length), 'huge_length' (announces 100 GiB)."""

    server: Server

    def do_GET(self) -> None:
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path != "/landmark_images.zip":
            self.send_error(404)
            return
        if srv.mode in ("endless", "huge_length"):
            self.send_response(200)
            if srv.mode == "huge_length":
                self.send_header("Content-Length", str(100 << 30))
            self.end_headers()
            # No length: the body ends when the connection does. Stop after 64 MiB in any case.
            for _ in range(1024):
                try:
                    self.wfile.write(bytes(1 << 16))
                    srv.sent += 1 << 16
                except OSError:
                    return
            return
        data, header = srv.payload, self.headers.get("Range")
        if header and srv.mode != "ignore_range":
            start = int(header.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.mode == "cut_first" and len(srv.ranges) == 1:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class Server(ThreadingHTTPServer):
    payload: bytes = GOOD_ZIP
    mode: str = "normal"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.ranges: list[str | None] = []
        self.sent = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/landmark_images.zip"


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def _assert_layout(dest: Path) -> None:
    for i, name in enumerate(MEMBERS):
        rel = Path(name).relative_to("landmark_images")
        assert (dest / rel).read_bytes() == GOOD[i][1]
    assert not (dest / "landmark_images").exists()
    assert not (dest / ".download").exists()
    assert (dest / ".complete").is_file()


def test_full_download_and_layout(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    assert download_dataset(dest, server.url, progress=False) == dest
    _assert_layout(dest)
    assert server.ranges == [None]
    assert hashlib.sha256(GOOD_ZIP).hexdigest() in (dest / ".complete").read_text()


def test_second_call_makes_no_request(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    download_dataset(dest, server.url, progress=False)
    download_dataset(dest, server.url, progress=False)
    download_dataset(dest, "http://127.0.0.1:1/unreachable.zip", progress=False)
    assert server.ranges == [None]


def test_resume_after_dropped_connection(server: Server, tmp_path: Path) -> None:
    server.mode = "cut_first"
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match="stopped after"):
        download_dataset(dest, server.url, progress=False)
    part = dest / ".download" / "landmark_images.zip.part"
    half = len(GOOD_ZIP) // 2
    assert part.stat().st_size == half
    download_dataset(dest, server.url, progress=False)
    assert server.ranges == [None, f"bytes={half}-"]
    _assert_layout(dest)


def test_server_ignoring_range_restarts_from_zero(server: Server, tmp_path: Path) -> None:
    server.mode = "ignore_range"
    dest = tmp_path / "ds"
    (dest / ".download").mkdir(parents=True)
    (dest / ".download" / "landmark_images.zip.part").write_bytes(b"garbage that must not be kept")
    download_dataset(dest, server.url, progress=False)
    assert server.ranges[0] is not None and server.ranges[0].startswith("bytes=")
    _assert_layout(dest)


def _only_dest_in(tmp_path: Path) -> None:
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]
    dest = tmp_path / "ds"
    assert not (dest / "train").exists() and not (dest / "test").exists()
    assert not (dest / ".complete").exists()
    assert not list(dest.rglob("*evil*"))


def test_refuses_parent_traversal(server: Server, tmp_path: Path) -> None:
    server.payload = _zip([*GOOD, ("landmark_images/../../evil.txt", b"x")])
    with pytest.raises(DataError, match="outside the destination"):
        download_dataset(tmp_path / "ds", server.url, progress=False)
    _only_dest_in(tmp_path)


def test_refuses_absolute_path(server: Server, tmp_path: Path) -> None:
    info = zipfile.ZipInfo("x")
    info.filename = str(tmp_path / "abs_evil.txt")  # set after init so zipfile does not sanitise it
    server.payload = _zip([*GOOD, (info, b"x")])
    with pytest.raises(DataError, match="absolute path"):
        download_dataset(tmp_path / "ds", server.url, progress=False)
    _only_dest_in(tmp_path)


def test_refuses_symlink(server: Server, tmp_path: Path) -> None:
    info = zipfile.ZipInfo("landmark_images/train/00.A/evil_link")
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    server.payload = _zip([*GOOD, (info, b"/etc/passwd")])
    with pytest.raises(DataError, match="symbolic link"):
        download_dataset(tmp_path / "ds", server.url, progress=False)
    _only_dest_in(tmp_path)


def test_corrupt_archive_is_deleted(server: Server, tmp_path: Path) -> None:
    server.payload = b"<html>not a zip</html>" * 50
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match="not a valid zip"):
        download_dataset(dest, server.url, progress=False)
    assert not (dest / ".download").exists()


def test_wrong_sha256_refused(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match="sha256"):
        download_dataset(dest, server.url, sha256="0" * 64, progress=False)
    assert not (dest / "train").exists() and not (dest / ".download").exists()
    download_dataset(dest, server.url, sha256=hashlib.sha256(GOOD_ZIP).hexdigest(), progress=False)
    _assert_layout(dest)


@pytest.mark.parametrize("as_url", [False, True])
def test_local_zip(tmp_path: Path, as_url: bool) -> None:
    src = tmp_path / "landmark_images.zip"
    src.write_bytes(GOOD_ZIP)
    dest = tmp_path / "ds"
    download_dataset(dest, src.as_uri() if as_url else str(src), progress=False)
    _assert_layout(dest)
    assert src.read_bytes() == GOOD_ZIP  # the user's zip is left alone


def test_network_errors_name_the_url(server: Server, tmp_path: Path) -> None:
    port = free_port()  # a port that was free a moment ago refuses connections
    url = f"http://127.0.0.1:{port}/landmark_images.zip"
    with pytest.raises(DataError, match=f"could not download {url}.*--url") as err:
        download_dataset(tmp_path / "a", url, progress=False, timeout=5)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset(tmp_path / "b", server.url.replace(".zip", "-missing.zip"), progress=False)


# ----------------------------------------------------------------------------- bombs, endless bodies, leftovers

def _bomb_zip(mib: int = 16) -> bytes:
    """The good dataset plus one photo that is `mib` MiB of zeros, deflated to a few KB."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in GOOD:
            zf.writestr(name, data)
        info = zipfile.ZipInfo("landmark_images/train/00.A/bomb.png")
        info.compress_type = zipfile.ZIP_DEFLATED
        with zf.open(info, "w") as out:
            for _ in range(mib):
                out.write(bytes(1 << 20))
    return buf.getvalue()


def _no_leftovers(dest: Path) -> None:
    assert not (dest / "train").exists() and not (dest / ".complete").exists()
    assert not list(dest.glob(".extract-*")) and not (dest / ".download").exists()


def test_zip_bomb_refused_before_extracting(server: Server, tmp_path: Path) -> None:
    server.payload = _bomb_zip()
    assert len(server.payload) < 100_000
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match=r"zip bomb: declares 16\.8 MB uncompressed in a \d+ KB file.*--max-ratio") \
            as err:
        download_dataset(dest, server.url, progress=False)
    assert "\n" not in str(err.value)
    _no_leftovers(dest)


def test_limits_can_be_raised(tmp_path: Path) -> None:
    src = tmp_path / "landmark_images.zip"
    src.write_bytes(_bomb_zip(mib=2))
    with pytest.raises(DataError, match="zip bomb"):
        download_dataset(tmp_path / "a", str(src), progress=False)
    with pytest.raises(DataError, match=r"over the 1\.0 MB limit.*--max-size"):
        download_dataset(tmp_path / "b", str(src), progress=False, max_ratio=1e6, max_bytes=1 << 20)
    dest = download_dataset(tmp_path / "c", str(src), progress=False, max_ratio=1e6)
    assert (dest / "train" / "00.A" / "bomb.png").stat().st_size == 2 << 20


def test_extraction_counts_bytes_as_it_writes(tmp_path: Path) -> None:
    """The declared sizes are checked first, but they can lie: the written bytes are counted too."""
    src = tmp_path / "landmark_images.zip"
    src.write_bytes(GOOD_ZIP)
    dest = tmp_path / "ds"
    dest.mkdir()
    budget = sum(len(data) for _, data in GOOD) - 1
    with pytest.raises(DataError, match="extracting it passed"):
        _extract(src, dest, budget)
    assert list(dest.iterdir()) == []
    assert _extract(src, dest, budget + 1) == len(GOOD)


def test_endless_body_stops_at_the_cap(server: Server, tmp_path: Path) -> None:
    server.mode = "endless"
    dest = tmp_path / "ds"
    with pytest.raises(DataError, match=r"more than 1\.0 MB without saying its size.*--max-size"):
        download_dataset(dest, server.url, progress=False, max_bytes=1 << 20)
    assert not list((dest / ".download").iterdir())  # the partial file is gone
    assert server.sent < 64 << 20


def test_announced_size_over_the_cap_is_refused_unread(server: Server, tmp_path: Path) -> None:
    server.mode = "huge_length"
    with pytest.raises(DataError, match=r"is 100\.0 GiB, over the 8\.0 GiB limit.*--max-size"):
        download_dataset(tmp_path / "ds", server.url, progress=False)


def test_stale_extract_folders_are_swept(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "ds"
    stale = dest / ".extract-k1ll3d_x"  # what a run killed mid-extraction leaves
    (stale / "train" / "00.A").mkdir(parents=True)
    (stale / "train" / "00.A" / "0.png").write_bytes(b"half")
    mine = [dest / ".extract-notours", dest / "extract-abcdefgh", dest / ".extract-abcdefgh.txt"]
    mine[0].mkdir()
    mine[1].mkdir()
    mine[2].write_text("the user's")
    download_dataset(dest, server.url, progress=False)
    _assert_layout(dest)
    assert not stale.exists() and all(p.exists() for p in mine)
    # A later run sweeps too, even when the dataset is already complete and there is nothing to do.
    stale.mkdir()
    download_dataset(dest, server.url, progress=False)
    assert not stale.exists() and server.ranges == [None]


def test_cli_size_options(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from landmark_search.cli import app

    src = tmp_path / "landmark_images.zip"
    src.write_bytes(_bomb_zip(mib=2))

    def run(*extra: str):
        return CliRunner().invoke(app, ["data", "download", str(tmp_path / "ds"), "--url", str(src), *extra])

    refused = run()
    assert refused.exit_code == 1 and "zip bomb" in refused.stderr and refused.stderr.count("\n") == 1
    assert run("--max-ratio", "1000000", "--max-size", "1M").exit_code == 1
    ok = run("--max-ratio", "1000000")
    assert ok.exit_code == 0 and "dataset ready" in ok.stdout
    assert parse_size("8G") == 8 << 30 and parse_size("1.5m") == 3 << 19 and parse_size("123") == 123
    with pytest.raises(DataError, match="--max-size"):
        parse_size("lots")
