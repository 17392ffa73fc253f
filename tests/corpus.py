"""Test helpers: a generated corpus of bad inputs, file snapshots, permission denial, and a fork server.

Nothing binary is checked in: `build_corpus` writes every file from a few good source photos.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import io
import json
import os
import shutil
import signal
import stat
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------------------- permissions as root

_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_CAPS_V3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _capabilities(new: list[int] | None = None) -> list[int]:
    """The calling thread's effective capability words, after setting them to `new` if given."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAPS_V3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise RuntimeError(f"capget failed: {os.strerror(ctypes.get_errno())}")
    if new is not None:
        for word, value in zip(data, new):
            word.effective = value
        if libc.capset(ctypes.byref(header), data) != 0:
            raise RuntimeError(f"capset failed: {os.strerror(ctypes.get_errno())}")
    return [word.effective for word in data]


@contextlib.contextmanager
def file_permissions_enforced() -> Iterator[None]:
    """Make chmod bite even for root: drop CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH from this thread.

    Tests run as root, which reads a chmod-000 file and writes into a read-only folder. Dropping the
    two capabilities that grant this (effective set of the calling thread only; forked DataLoader
    workers inherit it) makes the kernel refuse with EACCES exactly as it would for a normal user.
    """
    if os.geteuid() != 0:
        yield
        return
    saved = _capabilities()
    mask = (1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH)
    _capabilities([saved[0] & ~mask, saved[1]])
    try:
        yield
    finally:
        _capabilities(saved)


def permissions_can_be_enforced(probe_dir: Path) -> bool:
    """Whether a chmod-000 file is really unreadable inside `file_permissions_enforced()`."""
    probe = probe_dir / ".permission-probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        with file_permissions_enforced():
            probe.read_bytes()
    except PermissionError:
        return True
    except RuntimeError:  # a sandbox that forbids capset
        return False
    else:
        return False
    finally:
        probe.unlink()


@contextlib.contextmanager
def deadline(seconds: int) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `seconds`, so a hang (a FIFO opened for reading
    blocks forever) fails the test instead of stalling the suite."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds}s: hung?")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------- bad images


@functools.lru_cache(maxsize=2)
def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A complete, valid 1-bit PNG of `width` x `height` black pixels, about 110 KB for 30000 x 30000.

    Built by hand (Pillow would need the 900 MB image in memory to save it): IHDR with the huge
    size, then the zlib stream of all-zero rows fed a few thousand rows at a time.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    packer = zlib.compressobj(9)
    idat = bytearray()
    rows_per_step = 2_000
    for start in range(0, height, rows_per_step):
        idat += packer.compress(row * min(rows_per_step, height - start))
    idat += packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(idat)) + chunk(b"IEND", b"")


def _jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


# ------------------------------------------------------------------------------------- the corpus

# Bad files and the words their failure reason contains, whichever command meets them.
BAD_REASONS = {
    "empty.jpg": "an empty file (0 bytes)",
    "truncated.jpg": "truncated",
    "text.jpg": "not a readable image",
    "bomb.png": "megapixel limit",
    "unreadable.jpg": "permission denied",
    "self-loop.jpg": "symbolic links",
}
UNICODE_NAME = "Ünïcødé 東京 café.jpg"
SPACES_NAME = " name  with   spaces .jpg"
LATIN1_NAME = os.fsdecode(b"latin1-caf\xe9.jpg")  # not UTF-8: a surrogate escape in Python
USER_KEYS = {"title": "Our trip", "people": ["Ann", "Bo"], "rating": 5}
BAD_SIDECAR = b'{"title": "half-typed",'
BIG_SIZE = (1_600, 1_200)  # 1.92 MP: fine by default, refused by --max-pixels 1000000


@dataclass
class Corpus:
    """Paths of a generated corpus under `root` and what each command should make of them."""

    root: Path
    good: set[Path] = field(default_factory=set)  # decodable photos found by a folder walk
    bad: dict[Path, str] = field(default_factory=dict)  # undecodable photo -> reason words
    permissions_enforced: bool = False  # unreadable.jpg and readonly/ exist and bite

    def p(self, name: str) -> Path:
        """The path of a corpus entry by its relative name."""
        return self.root / name

    @property
    def readonly(self) -> set[Path]:
        return {p for p in self.good if p.parent.name == "readonly"}

    @property
    def vanishing_dir(self) -> Path:
        return self.root / "vanishing"

    @property
    def vanishing(self) -> set[Path]:
        return {p for p in self.good if p.parent == self.vanishing_dir}

    def restore_vanishing(self, sources: list[Path]) -> None:
        """(Re)create vanishing/ with its two photos, identical to the first build."""
        self.vanishing_dir.mkdir(exist_ok=True)
        for i, src in enumerate(sources[8:10]):
            shutil.copyfile(src, self.vanishing_dir / f"v-{i}.jpg")


def build_corpus(root: Path, sources: list[Path], *, enforce_permissions: bool) -> Corpus:
    """Write the bad-input corpus under `root` from 10 different good JPEG `sources`.

    Good (every command must process them): plain JPEGs, RGBA PNG, 16-bit PNG, grayscale JPEG,
    palette GIF with transparency, CMYK JPEG, an upright photo and the same photo stored sideways
    with EXIF orientation 6 (and once without the tag), a 1.9 MP PNG, unicode, space-laden and
    non-UTF-8 names, a photo whose sidecar holds the user's keys, a photo whose sidecar is invalid
    JSON, photos in a read-only folder and in a folder that a test removes mid-run.
    Bad (every command must name them): zero bytes, truncated JPEG, text named .jpg, a
    30000x30000 PNG bomb, an unreadable (chmod 000) file, a symlink to itself.
    Neither: a FIFO named .jpg (a folder walk passes over it; named as an argument it is refused),
    a symlink loop `loop -> .`, notes.txt and a hidden .hidden.jpg that is no image.
    """
    root.mkdir(parents=True)
    corpus = Corpus(root, permissions_enforced=enforce_permissions)
    imgs = [Image.open(s).convert("RGB") for s in sources]

    def good(name: str, data: bytes | None = None, img: Image.Image | None = None, **save) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        else:
            img.save(path, **save)
        corpus.good.add(path)
        return path

    good("plain-0.jpg", sources[0].read_bytes())
    good("plain-1.jpg", sources[1].read_bytes())
    rgba = imgs[2].convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:, : alpha.shape[1] // 2, 3] = 0  # the left half is transparent
    good("alpha.png", img=Image.fromarray(alpha, "RGBA"))
    gray16 = np.asarray(imgs[3].convert("L"), dtype=np.uint16) * 257  # full 16-bit range
    good("sixteen-bit.png", img=Image.fromarray(gray16))
    good("gray.jpg", img=imgs[4].convert("L"), quality=90)
    palette = imgs[5].convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    good("palette.gif", img=palette, transparency=0)
    good("cmyk.jpg", img=imgs[6].convert("CMYK"), quality=90)
    # EXIF orientation 6 means "rotate 90 degrees clockwise to view": store the pixels turned back.
    upright = imgs[7].resize((96, 64))
    good("upright.jpg", _jpeg_bytes(upright))
    exif = Image.Exif()
    exif[0x0112] = 6
    turned = upright.transpose(Image.Transpose.ROTATE_90)
    good("exif-rotated.jpg", _jpeg_bytes(turned, exif=exif.tobytes()))
    good("sideways-no-exif.jpg", _jpeg_bytes(turned))
    good("big.png", img=imgs[0].resize(BIG_SIZE, Image.Resampling.NEAREST))
    good(UNICODE_NAME, sources[2].read_bytes())
    good(SPACES_NAME, sources[3].read_bytes())
    good(LATIN1_NAME, sources[4].read_bytes())
    good("user-keys.jpg", sources[5].read_bytes())
    (root / "user-keys.jpg.json").write_text(json.dumps(USER_KEYS))
    good("bad-sidecar.jpg", sources[6].read_bytes())
    (root / "bad-sidecar.jpg.json").write_bytes(BAD_SIDECAR)
    good("readonly/ro-0.jpg", sources[0].read_bytes())
    good("readonly/ro-1.jpg", sources[1].read_bytes())
    corpus.restore_vanishing(sources)
    corpus.good |= {corpus.vanishing_dir / "v-0.jpg", corpus.vanishing_dir / "v-1.jpg"}

    jpeg = sources[0].read_bytes()
    (root / "empty.jpg").write_bytes(b"")
    (root / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (root / "text.jpg").write_text("this is not a photo\n")
    (root / "bomb.png").write_bytes(png_bomb())
    os.symlink("self-loop.jpg", root / "self-loop.jpg")
    names = ["empty.jpg", "truncated.jpg", "text.jpg", "bomb.png", "self-loop.jpg"]
    if enforce_permissions:
        (root / "unreadable.jpg").write_bytes(jpeg)
        (root / "unreadable.jpg").chmod(0)
        names.append("unreadable.jpg")
        (root / "readonly").chmod(0o555)
    else:  # without a way to deny root, the folder is an ordinary one and nothing is unreadable
        corpus.good -= corpus.readonly
    corpus.bad = {root / n: BAD_REASONS[n] for n in names}

    os.mkfifo(root / "fifo.jpg")
    os.symlink(".", root / "loop", target_is_directory=True)
    (root / "notes.txt").write_text("the user's own notes\n")
    (root / ".hidden.jpg").write_text("hidden files are never photos\n")
    return corpus


def copy_entry(src: Path, dst: Path) -> None:
    """Copy one corpus entry as it is: a symlink as the same link, a FIFO as a FIFO, a file with its mode."""
    st = src.lstat()
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISFIFO(st.st_mode):
        os.mkfifo(dst)
    else:
        mode = stat.S_IMODE(st.st_mode)
        os.chmod(src, mode | stat.S_IRUSR)  # a chmod-000 file: its owner (not root) must let itself read it
        try:
            shutil.copyfile(src, dst)
        finally:
            os.chmod(src, mode)
        os.chmod(dst, mode)


# ------------------------------------------------------------------------------------- snapshots

SIDECAR_SUFFIXES = (".json", ".xmp")


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple]:
    """Relative path -> (type, mode, sha256 or link target) of everything under root, links unfollowed."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if any(here == s or s in here.parents for s in skip):
            continue
        for name in dirs + files:
            path = here / name
            if any(path == s for s in skip):
                continue
            st = path.lstat()
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                try:
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:  # chmod 000 and not root: its mode is all we can compare
                    digest = "unreadable"
                out[rel] = ("file", stat.S_IMODE(st.st_mode), digest)
            else:
                out[rel] = ("dir" if stat.S_ISDIR(st.st_mode) else "other", stat.S_IMODE(st.st_mode))
    return out


def is_sidecar(rel: str) -> bool:
    return rel.endswith(SIDECAR_SUFFIXES)


def non_sidecars(snap: dict[str, tuple]) -> dict[str, tuple]:
    return {rel: v for rel, v in snap.items() if not is_sidecar(rel)}


# ----------------------------------------------------------------------------------- fork server


def serve() -> None:
    """Fork server (run as `python -c "import corpus; corpus.serve()"`): import the CLI once, then
    run each requested command in a forked child, exactly as the `landmark` console script runs
    `landmark_search.cli:app`. Requests and replies are JSON lines on stdin/stdout."""
    from landmark_search import cli
    # What the commands import lazily, so that each child pays for its work and not for imports.
    import landmark_search.embeddings  # noqa: F401
    import landmark_search.index.store  # noqa: F401
    import landmark_search.search  # noqa: F401
    import landmark_search.tagging  # noqa: F401
    import torchvision.transforms.v2.functional  # noqa: F401

    reply = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "run":
            reply.flush()
            pid = os.fork()
            if pid == 0:
                _run_child(cli.app, request)
            answer = {"pid": pid}
        else:  # "poll"
            pid, status = os.waitpid(request["pid"], os.WNOHANG)
            answer = {"code": os.waitstatus_to_exitcode(status) if pid else None}
        reply.write(json.dumps(answer) + "\n")
        reply.flush()


def _run_child(app, request: dict) -> None:
    code = 1
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        for fd, name in ((1, request["stdout"]), (2, request["stderr"])):
            out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        os.chdir(request["cwd"])
        os.environ.update(request["env"])
        sys.argv = ["landmark", *request["args"]]
        try:
            app(args=request["args"], prog_name="landmark")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:  # what an uncaught exception does to the console script
            import traceback

            traceback.print_exc()
            code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


@dataclass
class Child:
    """One `landmark` process started by the fork server."""

    pid: int
    stdout: Path
    stderr: Path
    started: float
    code: int | None = None

    def output(self) -> str:
        return self.stdout.read_text(errors="replace") + self.stderr.read_text(errors="replace")


class ForkServer:
    """Client of `serve()`: starts real `landmark` processes without paying the 3 s import each time."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(Path(__file__).parent)]))
        # On a busy 2-core machine OpenMP threads that spin while waiting make a run 3-5x slower
        # (and its timing erratic); the runs' outcome does not depend on it.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen([sys.executable, "-c", "import corpus; corpus.serve()"], cwd=workdir,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._count = 0
        self._children: list[Child] = []

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the fork server died; see the test's stderr")
        return json.loads(line)

    def start(self, *args: str | Path) -> Child:
        """Start `landmark ARGS...` with this process's environment (XDG_CACHE_HOME included)."""
        self._count += 1
        out, err = (self.workdir / f"run-{self._count}.{s}" for s in ("out", "err"))
        env = {k: os.environ[k] for k in ("XDG_CACHE_HOME", "TORCH_HOME", "LANDMARK_WEIGHTS_MIRROR")
               if k in os.environ}
        started = time.monotonic()
        pid = self._ask({"op": "run", "args": [str(a) for a in args], "cwd": str(self.workdir), "env": env,
                         "stdout": str(out), "stderr": str(err)})["pid"]
        child = Child(pid, out, err, started)
        self._children.append(child)
        return child

    def poll(self, child: Child) -> int | None:
        """The child's exit code (negative: killed by that signal), or None while it runs."""
        if child.code is None:
            child.code = self._ask({"op": "poll", "pid": child.pid})["code"]
        return child.code

    def wait(self, child: Child, timeout: float = 120.0) -> int:
        deadline = time.monotonic() + timeout
        while self.poll(child) is None:
            if time.monotonic() > deadline:
                os.kill(child.pid, signal.SIGKILL)
                while self.poll(child) is None:
                    time.sleep(0.01)
                raise AssertionError(f"landmark (pid {child.pid}) ran over {timeout}s:\n{child.output()}")
            time.sleep(0.01)
        return child.code

    def run(self, *args: str | Path, timeout: float = 120.0) -> Child:
        child = self.start(*args)
        self.wait(child, timeout)
        return child

    def close(self) -> None:
        for child in self._children:
            if child.code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
                self.wait(child, 10)
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
