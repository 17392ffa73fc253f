"""A near-duplicate test set generated from real photos, with its ground truth (for bench_duplicates.py).

For each chosen original: an exact byte copy, a re-encoded JPEG q50, a 50 % resize, a 10 % crop, +20 %
brightness, a screenshot-style border and a metadata-only edit (EXIF stripped, or a comment added when
there is none: same pixels, other bytes). Every other photo of the same landmark is a hard negative.
Simulated bursts ("same scene"): two overlapping 80 % windows of a photo, shifted by 12-18 %, turned by
up to 4 degrees and zoomed by up to 7 %, 1 s apart in EXIF: not the same picture, the same moment. Usage:

    python benchmarks/dupset.py SRC_FOLDER OUT_FOLDER [--originals 120] [--bursts 40] [--seed 0]

Writes OUT/photos/... and OUT/truth.json: {"near": [[paths of one group], ...], "same_scene": [...],
"class": {path: class folder}}. Exact copies are in their near group too; `truth["exact"]` lists them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

SET_MTIME = 1_700_000_000  # the file time of every photo the set writes
VARIANTS = ("exact", "q50", "half", "crop10", "bright20", "border", "meta")


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _strip_or_comment(data: bytes) -> bytes:
    """The same JPEG without its APP1 (EXIF/XMP) segments, or with a COM segment added when it has none."""
    if data[:2] != b"\xff\xd8":
        return data + b"\x00"  # not a JPEG: trailing byte, pixels unchanged
    out, i, stripped = bytearray(data[:2]), 2, False
    while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] not in (0xDA, 0xD9):
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if data[i + 1] == 0xE1:
            stripped = True
        else:
            out += data[i:i + 2 + length]
        i += 2 + length
    if not stripped:
        comment = b"edited by a photo app"
        out += b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    out += data[i:]
    return bytes(out)


def variant(src: Path, kind: str, rng: random.Random) -> bytes:
    """The bytes of one near-duplicate of `src`."""
    data = src.read_bytes()
    if kind == "exact":
        return data
    if kind == "meta":
        return _strip_or_comment(data)
    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    w, h = img.size
    if kind == "q50":
        return _jpeg(img, 50)
    if kind == "half":
        return _jpeg(img.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS), 85)
    if kind == "crop10":  # 10 % of the area off, the window placed at random
        cw, ch = round(w * 0.9 ** 0.5), round(h * 0.9 ** 0.5)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return _jpeg(img.crop((x, y, x + cw, y + ch)), 85)
    if kind == "bright20":
        return _jpeg(ImageEnhance.Brightness(img).enhance(1.2), 85)
    if kind == "border":  # a phone screenshot: status bar above, a grey band below, thin side margins
        top, bottom, side = max(4, h // 10), max(4, h // 7), max(1, w // 40)
        canvas = Image.new("RGB", (w + 2 * side, h + top + bottom), (250, 250, 250))
        canvas.paste((20, 20, 20), (0, 0, canvas.width, top // 2))
        canvas.paste(img, (side, top))
        return _jpeg(canvas, 90)
    raise ValueError(kind)


def _exif(taken: str, camera: str) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = camera.split(" ", 1)  # Make, Model
    exif.get_ifd(0x8769)[0x9003] = taken  # Exif IFD: DateTimeOriginal
    return exif.tobytes()


def burst(src: Path, rng: random.Random) -> tuple[bytes, bytes]:
    """Two shots of one moment: 80 % windows 12-18 % apart, turned by up to 4 degrees, one zoomed by up to 7 %,
    1 s apart in EXIF (same camera)."""
    img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
    w, h = img.size
    cw, ch = int(w * 0.8), int(h * 0.8)
    shift = rng.uniform(0.12, 0.18)
    dx, dy = int(w * shift * rng.choice((-1, 1))), int(h * shift * rng.uniform(-0.5, 0.5))
    x0, y0 = (w - cw) // 2 - dx // 2, (h - ch) // 2 - dy // 2
    shots = []
    day, hour, minute = rng.randint(1, 28), rng.randint(8, 18), rng.randint(0, 58)
    for second, (x, y) in enumerate(((x0, y0), (x0 + dx, y0 + dy))):
        x, y = min(max(0, x), w - cw), min(max(0, y), h - ch)
        zoom = 1.0 if second == 0 else rng.uniform(0.93, 1.07)  # the photographer steps or zooms
        shot = img.crop((x, y, x + cw, y + ch)).rotate(rng.uniform(-4, 4), Image.BICUBIC)
        shot = shot.resize((round(cw * zoom), round(ch * zoom)), Image.BICUBIC)
        buf = io.BytesIO()
        shot.save(buf, "JPEG", quality=85, exif=_exif(f"2024:05:{day:02d} {hour:02d}:{minute:02d}:{second:02d}",
                                                       "BenchCam X1"))
        shots.append(buf.getvalue())
    return shots[0], shots[1]


def make_set(src: Path, out: Path, *, originals: int = 120, bursts: int = 40, seed: int = 0,
             extra: Path | None = None) -> dict:
    """Copy every photo of `src` (class folders, any depth) into OUT/photos, add variants, write truth.json.
    The set comes out byte- and time-identical each time (copies keep their file times, written files get
    SET_MTIME), so an index built on it earlier needs no new embedding: an interrupted benchmark resumes."""
    rng = random.Random(seed)
    photos = sorted(p for p in src.rglob("*.jpg"))
    if out.exists():
        shutil.rmtree(out)
    root = out / "photos"
    truth: dict = {"near": [], "same_scene": [], "exact": [], "class": {}}
    chosen = rng.sample(photos, min(originals + bursts, len(photos)))
    burst_sources = set(chosen[originals:])  # only their two shots are in the set: no "original" to be near
    placed: dict[Path, Path] = {}
    for p in photos:
        if p in burst_sources:
            continue
        dest = root / p.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dest)
        placed[p] = dest
        truth["class"][str(dest)] = p.parent.name
    if extra is not None:  # photos of no landmark: negatives for every tier
        for p in sorted(extra.glob("*.jpg")):
            dest = root / "other" / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest)
            truth["class"][str(dest)] = "other"
    for p in chosen[:originals]:
        group = [str(placed[p])]
        for kind in VARIANTS:
            dest = root / "dups" / kind / p.parent.name / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(variant(p, kind, rng))
            os.utime(dest, (SET_MTIME, SET_MTIME))
            group.append(str(dest))
            truth["class"][str(dest)] = p.parent.name
            if kind == "exact":
                truth["exact"].append([str(placed[p]), str(dest)])
        truth["near"].append(group)
    for p in chosen[originals:]:
        pair = []
        for i, data in enumerate(burst(p, rng)):
            dest = root / "bursts" / f"shot{i}" / p.parent.name / p.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)
            os.utime(dest, (SET_MTIME, SET_MTIME))
            pair.append(str(dest))
            truth["class"][str(dest)] = p.parent.name
        truth["same_scene"].append(pair)
    (out / "truth.json").write_text(json.dumps(truth, indent=1))
    return truth


LARGE_SIDE = (640, 480)  # the large set's photos: web size, so decoding (phash's whole cost) is cheap
LARGE_COPY_KINDS = ("exact", "q50", "half", "crop10", "bright20")


def _mosaic(sources: list[Image.Image], rng: random.Random) -> Image.Image:
    """Four tiles, each a random 30-70 % window of a random source photo, mirrored or brightened at random:
    a photo-like picture that no other mosaic duplicates (sharing one tile's source is not a copy)."""
    w, h = LARGE_SIDE
    canvas = Image.new("RGB", (w, h))
    for k in range(4):
        img = sources[rng.randrange(len(sources))]
        side = rng.uniform(0.3, 0.7) ** 0.5
        cw, ch = max(8, round(img.width * side)), max(8, round(img.height * side))
        x, y = rng.randint(0, img.width - cw), rng.randint(0, img.height - ch)
        tile = img.crop((x, y, x + cw, y + ch)).resize((w // 2, h // 2), Image.BILINEAR)
        if rng.random() < 0.5:
            tile = ImageOps.mirror(tile)
        tile = ImageEnhance.Brightness(tile).enhance(rng.uniform(0.8, 1.2))
        canvas.paste(tile, ((k % 2) * w // 2, (k // 2) * h // 2))
    return canvas


_SOURCES: list[Image.Image] = []  # the source photos at LARGE_SIDE, decoded once in each worker


def _load_sources(srcs: list[Path]) -> None:
    for src in srcs:
        img = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        img.thumbnail(LARGE_SIDE)
        _SOURCES.append(img)


def _large_part(job: tuple[Path, int, int, int, int]) -> list[list[str]]:
    """Photos start..stop of make_large_set (one worker's share): mosaics, then copies of some of them."""
    root, start, stop, n, seed = job
    copies = n // 10
    pairs = []
    for i in range(start, stop):
        dest = root / f"{i // 1000:03d}" / f"p{i:06d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if i < n - copies:
            dest.write_bytes(_jpeg(_mosaic(_SOURCES, random.Random(seed * 10_000_019 + i)), 85))
        else:  # a near copy of mosaic j (which another worker may write: made again here from the same seed)
            j = (i - (n - copies)) * 7 % (n - copies)
            rng = random.Random(seed * 10_000_019 + j)
            original = root / f"{j // 1000:03d}" / f"p{j:06d}.jpg"
            tmp = dest.with_suffix(".src")
            tmp.write_bytes(_jpeg(_mosaic(_SOURCES, rng), 85))
            dest.write_bytes(variant(tmp, LARGE_COPY_KINDS[i % len(LARGE_COPY_KINDS)], rng))
            tmp.unlink()
            pairs.append([str(original), str(dest)])
        os.utime(dest, (SET_MTIME, SET_MTIME))
    return pairs


def make_large_set(srcs: list[Path], out: Path, n: int, *, seed: int = 0, workers: int = 2) -> dict:
    """n photos for timing at scale: 90 % distinct mosaics of tiles of the real source photos, 10 % near copies
    of them (exact, q50, half size, 10 % crop, +20 % brightness). Written once: a set already made with the
    same n and seed is reused (truth.json holds both). Returns the truth: {"n", "seed", "copies": [[a, b]]}."""
    truth_file = out / "truth.json"
    if truth_file.exists():
        truth = json.loads(truth_file.read_text())
        if (truth.get("n"), truth.get("seed")) == (n, seed):
            return truth
        shutil.rmtree(out)
    from multiprocessing import Pool

    cuts = [n * k // (workers * 8) for k in range(workers * 8 + 1)]
    jobs = [(out / "photos", a, b, n, seed) for a, b in zip(cuts, cuts[1:])]
    with Pool(workers, _load_sources, (srcs,)) as pool:
        copies = [pair for part in pool.map(_large_part, jobs) for pair in part]
    truth = {"n": n, "seed": seed, "copies": copies}
    truth_file.write_text(json.dumps(truth))
    return truth


def make_keeper_set(src: Path, out: Path, *, originals: int = 40, seed: int = 0) -> list[list[str]]:
    """Derivative sets for the keep rule: each original (the source re-saved at q92 with a camera's EXIF:
    make, model, capture time) beside its exact copy, q50 and q75 re-saves, a 50 % resize and a 10 % crop
    (q92), and the original with its EXIF stripped (same pixels and quality, other bytes). Every copy is
    newer on disk than its original. Returns [[original, copies...]] (the original first)."""
    rng = random.Random(seed)
    photos = sorted(src.rglob("*.jpg"))
    if out.exists():
        shutil.rmtree(out)
    sets = []
    for n, p in enumerate(rng.sample(photos, min(originals, len(photos)))):
        folder = out / f"{n:03d}-{p.parent.name}"
        folder.mkdir(parents=True)
        img = ImageOps.exif_transpose(Image.open(p)).convert("RGB")
        w, h = img.size
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=92, exif=_exif(f"2019:0{1 + n % 9}:1{n % 10} 10:00:00", "Nikon D750"))
        original = buf.getvalue()
        files = {"original": original, "exact": original, "q50": _jpeg(img, 50), "q75": _jpeg(img, 75),
                 "half": _jpeg(img.resize((max(1, w // 2), max(1, h // 2)), Image.LANCZOS), 92),
                 "stripped": _strip_or_comment(original)}
        cw, ch = round(w * 0.9 ** 0.5), round(h * 0.9 ** 0.5)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        files["crop10"] = _jpeg(img.crop((x, y, x + cw, y + ch)), 92)
        group = []
        for k, (kind, data) in enumerate(files.items()):
            dest = folder / f"{kind}.jpg"
            dest.write_bytes(data)
            os.utime(dest, (1_600_000_000 + 60 * k, 1_600_000_000 + 60 * k))
            group.append(str(dest))
        sets.append(group)
    return sets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--extra", type=Path, default=None, help="a flat folder of photos of no landmark")
    parser.add_argument("--originals", type=int, default=120)
    parser.add_argument("--bursts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    truth = make_set(args.src, args.out, originals=args.originals, bursts=args.bursts, seed=args.seed,
                     extra=args.extra)
    print(f"{len(truth['class'])} photos, {len(truth['near'])} near groups, {len(truth['same_scene'])} bursts")


if __name__ == "__main__":
    main()
