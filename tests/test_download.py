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

from landmark_search.data.download import download_dataset
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
    """Serves server.payload; modes: 'normal', 'cut_first' (drop half way on request 1), 'ignore_range'."""

    server: Server

    def do_GET(self) -> None:
        srv = self.server
        srv.ranges.append(self.headers.get("Range"))
        if self.path != "/landmark_images.zip":
            self.send_error(404)
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
    with socket.socket() as s:  # a port that was free a moment ago refuses connections
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/landmark_images.zip"
    with pytest.raises(DataError, match=f"could not download {url}.*--url") as err:
        download_dataset(tmp_path / "a", url, progress=False, timeout=5)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="HTTP 404"):
        download_dataset(tmp_path / "b", server.url.replace(".zip", "-missing.zip"), progress=False)
