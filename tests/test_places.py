"""Places: places.csv, EXIF GPS, XMP geotags read back by exiftool, the time-window spread, data from-gps."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.ExifTags import GPS, IFD, Base

from conftest import SYNTH_NAMES, SYNTH_PLACES, exiftool_json
from landmark_search.config import EmbedConfig
from landmark_search.errors import DataError
from landmark_search.photos.exif import read_exif
from landmark_search.places.table import geometric_median, haversine_m, read_places_csv, xmp_coordinate

CFG = EmbedConfig(progress=False, workers=0)


def write_photo(path: Path, source: Path | None = None, gps: tuple[float, float] | None = None,
                taken: datetime | None = None, camera: str = "Acme Cam1") -> Path:
    """A JPEG (a copy of `source`, or a flat colour) with the EXIF GPS, time and camera asked for."""
    img = Image.open(source).convert("RGB") if source else Image.new("RGB", (64, 64), (90, 140, 200))
    exif = Image.Exif()
    exif[Base.Make], exif[Base.Model] = camera.split(" ", 1)
    if taken is not None:
        exif.get_ifd(IFD.Exif)[Base.DateTimeOriginal] = taken.strftime("%Y:%m:%d %H:%M:%S")
    if gps is not None:
        g = exif.get_ifd(IFD.GPSInfo)
        for value, (ref_tag, tag, refs) in zip(gps, ((GPS.GPSLatitudeRef, GPS.GPSLatitude, "NS"),
                                                     (GPS.GPSLongitudeRef, GPS.GPSLongitude, "EW"))):
            g[ref_tag] = refs[int(value < 0)]
            deg = abs(float(value))
            g[tag] = (float(int(deg)), float(int(deg * 60) % 60), round(deg * 3600 % 60, 4))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, exif=exif, quality=92)
    return path


def exif_gps(path: Path) -> tuple[float, float] | None:
    """exiftool as the reference reader of an XMP sidecar's position."""
    out = exiftool_json(path, "-n", "-GPSLatitude", "-GPSLongitude", "-City", "-Country")
    return (out["GPSLatitude"], out["GPSLongitude"]) if "GPSLatitude" in out else None


@pytest.mark.parametrize(("text", "match"), [
    ("name,lat\nTower,1\n", "header must name class,latitude,longitude"),
    ("class,latitude,longitude\nTower,north,2\n", r"row 2: latitude 'north'"),
    ("class,latitude,longitude\nTower,95,2\n", r"row 2: 95.0,2.0 is not on Earth"),
    ("class,latitude,longitude\nTower,1,2\nTower,3,4\n", r"row 3: Tower appears twice"),
    ("class,latitude,longitude\n,1,2\n", r"row 2: no class name"),
])
def test_bad_places_csv_rows_are_one_line_errors_naming_the_row(tmp_path, text, match):
    path = tmp_path / "places.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        read_places_csv(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_exif_gps_and_the_robust_centre(tmp_path):
    photo = write_photo(tmp_path / "a.jpg", gps=(-33.8568, 151.2153), taken=datetime(2024, 5, 1, 12, 0))
    facts = read_exif(photo)
    gps, taken, camera = facts.gps, facts.taken, facts.camera
    assert haversine_m(gps, (-33.8568, 151.2153)) < 2 and taken == datetime(2024, 5, 1, 12, 0)
    assert camera == "Acme Cam1"
    rng = np.random.default_rng(0)
    cluster = [(48.8584 + d1, 2.2945 + d2) for d1, d2 in rng.normal(0, 0.0003, (20, 2))]
    lat, lon, spread = geometric_median(cluster + [(40.7, -74.0)])  # one photo from another continent
    assert haversine_m((lat, lon), (48.8584, 2.2945)) < 30 and spread < 60
    assert xmp_coordinate(27.1751, "N", "S") == "27,10.506000N" and xmp_coordinate(-43.2105, "E", "W")[-1] == "W"


def test_from_gps_recovers_the_places(tmp_path):
    from landmark_search.places.from_gps import dataset_from_gps

    rng = np.random.default_rng(1)
    centres = {"paris": (48.8584, 2.2945), "sydney": (-33.8568, 151.2153), "agra": (27.1751, 78.0421)}
    truth = {}
    for name, (lat, lon) in centres.items():
        for i in range(6):
            jitter = rng.normal(0, 0.0004, 2)  # ~40 m
            truth[write_photo(tmp_path / "lib" / f"{name}_{i}.jpg", gps=(lat + jitter[0], lon + jitter[1]))] = name
    write_photo(tmp_path / "lib" / "lone.jpg", gps=(0.5, 0.5))  # a place with one photo: noise
    write_photo(tmp_path / "lib" / "nogps.jpg")
    summary = dataset_from_gps([tmp_path / "lib"], tmp_path / "data", min_photos=4)
    assert len(summary.clusters) == 3 and summary.noise == 1 and summary.without_gps == 1
    for cluster in summary.clusters:
        assert len({truth[p] for p in cluster.photos}) == 1 and len(cluster.photos) == 6
        lat, lon = centres[truth[cluster.photos[0]]]
        assert haversine_m((cluster.latitude, cluster.longitude), (lat, lon)) < 100
        links = sorted((tmp_path / "data" / "train" / cluster.name).iterdir())
        assert all(p.is_symlink() for p in links) and len(links) == 6
    places = read_places_csv(tmp_path / "data" / "places.csv")
    assert {p.country for p in places.values()} == {"France", "Australia", "India"}
    assert all(p.city for p in places.values())  # written as a column the user can correct
    with pytest.raises(DataError, match="already holds a dataset"):
        dataset_from_gps([tmp_path / "lib"], tmp_path / "data")


def test_geotag_places_photos_without_gps_and_never_overwrites(trained_run, synth_data, tmp_path):
    from landmark_search.embeddings import load_model
    from landmark_search.tagging import TagOptions, tag
    from landmark_search.untag import UntagOptions, untag

    model = load_model(trained_run / "best.pt")
    assert set(model.meta["places"]) == set(SYNTH_PLACES)  # train read DATA/places.csv
    towers = sorted((synth_data / "test" / "00.Tower").glob("*.jpg"))
    noon = datetime(2024, 5, 1, 12, 0)
    lib = tmp_path / "lib"
    placed = write_photo(lib / "tower.jpg", towers[0], taken=noon)
    own_gps = write_photo(lib / "own.jpg", towers[1], gps=(10.0, 20.0), taken=noon)
    users_xmp = write_photo(lib / "users.jpg", towers[2], taken=noon)
    Path(f"{users_xmp}.xmp").write_text(  # the user's own position, set in digiKam
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:exif="http://ns.adobe.com/exif/1.0/" exif:GPSLatitude="1,30.0N" '
        'exif:GPSLongitude="2,0.0E"/></rdf:RDF></x:xmpmeta>', encoding="utf-8")
    same_trip = write_photo(lib / "trip.jpg", taken=noon + timedelta(minutes=10))  # no landmark in it
    other_cam = write_photo(lib / "other.jpg", taken=noon + timedelta(minutes=10), camera="Other Cam2")
    late = write_photo(lib / "late.jpg", taken=noon + timedelta(hours=3))

    summary = tag([lib], str(trained_run / "best.pt"), TagOptions(geotag=True, recall=1.0), CFG)
    assert not summary.failed and placed in summary.tagged
    paris = SYNTH_PLACES["00.Tower"]
    assert haversine_m(exif_gps(Path(f"{placed}.xmp")), paris) < 1000
    assert not Path(f"{own_gps}.xmp").exists() or exif_gps(Path(f"{own_gps}.xmp")) is None  # its EXIF has one
    assert exif_gps(Path(f"{users_xmp}.xmp")) == pytest.approx((1.5, 2.0))  # the user's position stays
    assert haversine_m(exif_gps(Path(f"{same_trip}.xmp")), paris) < 1000  # inherited from its trip
    entry = json.loads(Path(f"{same_trip}.json").read_text())["landmark_search"]
    assert entry["place"]["from"] == "time: tower.jpg" and entry["unknown"] is True
    assert entry["place"]["minutes"] == 10.0  # tower.jpg was taken 10 minutes before it
    assert entry["place"]["confidence"] < json.loads(Path(f"{placed}.json").read_text())[
        "landmark_search"]["place"]["confidence"]
    assert not Path(f"{other_cam}.xmp").exists() and not Path(f"{late}.xmp").exists()

    untag([lib], UntagOptions(xmp=True))
    assert not Path(f"{placed}.xmp").exists() and not Path(f"{same_trip}.xmp").exists()
    assert exif_gps(Path(f"{users_xmp}.xmp")) == pytest.approx((1.5, 2.0))
    assert sorted(summary.geotagged) == sorted([placed, same_trip])


def test_one_name_per_class_for_keyword_location_and_map(trained_run, synth_data, tmp_path):
    """places.csv names 01.Stone_Arch "Harbour Arch": the model, its keywords, the XMP location and the map all say
    that, never the folder's "Stone Arch"."""
    from typer.testing import CliRunner

    from landmark_search.cli import app
    from landmark_search.embeddings import load_model

    model = load_model(trained_run / "best.pt")
    assert model.class_names == [SYNTH_NAMES[c] for c in model.class_ids]
    assert all(model.meta["places"][c]["name"] == SYNTH_NAMES[c] for c in model.class_ids)
    lib = tmp_path / "lib"
    for i, src in enumerate(sorted((synth_data / "test" / "01.Stone_Arch").glob("*.jpg"))[:3]):
        write_photo(lib / f"arch_{i}.jpg", src)
    run = CliRunner().invoke(app, ["tag", str(lib), "--model", str(trained_run / "best.pt"), "--geotag",
                                   "--recall", "1.0", "--min-score", "0", "--top-k", "1"])
    assert run.exit_code == 0, run.output
    placed = [p for p in sorted(lib.glob("*.jpg")) if Path(f"{p}.xmp").exists()]
    assert placed, run.output
    for photo in placed:
        xmp = exiftool_json(Path(f"{photo}.xmp"))
        entry = json.loads(Path(f"{photo}.json").read_text())["landmark_search"]
        label = entry["tags"][0]["label"]
        assert label in SYNTH_NAMES.values() and label != "Stone Arch"
        assert xmp["Subject"] in (label, [label])
        if "place" in entry:  # placed: the XMP location says the model's name; held back: no location at all
            assert xmp["Location"] == label == entry["place"]["name"]
        else:
            assert "Location" not in xmp and "GPSLatitude" not in xmp
    assert any("place" in json.loads(Path(f"{p}.json").read_text())["landmark_search"] for p in placed), run.output
    result = CliRunner().invoke(app, ["map", str(lib), "--out", str(tmp_path / "map.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "map.html").read_text()
    markers = json.loads(page.split('id="places">')[1].split("</script>")[0].replace("&quot;", '"'))
    labels = {json.loads(Path(f"{p}.json").read_text())["landmark_search"]["tags"][0]["label"] for p in placed}
    assert {m["name"] for m in markers} == labels


def test_an_older_checkpoint_names_its_places_by_its_class_names(trained_run, tmp_path):
    """A checkpoint whose places carry other names than its classes (trained before one name per class) says its
    class names everywhere once loaded."""
    import torch

    from landmark_search.embeddings import load_model

    payload = torch.load(trained_run / "best.pt", weights_only=True)
    payload["meta"]["places"]["01.Stone_Arch"]["name"] = "Harbour Arch (north pylon)"
    torch.save(payload, tmp_path / "old.pt")
    model = load_model(tmp_path / "old.pt")
    assert {c: p["name"] for c, p in model.meta["places"].items()} == {c: SYNTH_NAMES[c] for c in SYNTH_PLACES}


def test_map_has_a_marker_per_place(tmp_path):
    from typer.testing import CliRunner

    from landmark_search.cli import app

    for i in range(3):
        write_photo(tmp_path / "lib" / f"paris_{i}.jpg", gps=(48.8584 + i * 1e-4, 2.2945))
    write_photo(tmp_path / "lib" / "sydney.jpg", gps=(-33.8568, 151.2153))
    write_photo(tmp_path / "lib" / "nowhere.jpg")
    result = CliRunner().invoke(app, ["map", str(tmp_path / "lib"), "--out", str(tmp_path / "map.html")])
    assert result.exit_code == 0, result.output
    assert "2 place(s), 4 photo(s) with a position, 1 without" in result.output
    page = (tmp_path / "map.html").read_text()
    data = json.loads(page.split('id="places">')[1].split("</script>")[0].replace("&quot;", '"'))
    assert sorted(p["photos"] for p in data) == [1, 3] and page.count('class="marker"') == 2
    bad = CliRunner().invoke(app, ["map", str(tmp_path / "lib"), "--out", str(tmp_path / "map.png")])
    assert bad.exit_code == 1 and "name it map.html" in bad.output


def test_geotag_places_only_photos_far_above_the_tag_threshold(trained_run, synth_data, tmp_path):
    """A wrong position is worse than none: a tagged photo gets its landmark's place only at the stricter
    geotag threshold; the others are counted as held back."""
    from landmark_search.embeddings import load_model
    from landmark_search.tagging import TagOptions, tag

    openset = load_model(trained_run / "best.pt").openset
    floor = openset.geotag_threshold(openset.threshold_for(1.0))
    assert floor > openset.threshold_for(1.0)
    lib = tmp_path / "lib"
    for i, src in enumerate(sorted((synth_data / "test").rglob("*.jpg"))):
        write_photo(lib / f"p{i}.jpg", src)  # no GPS, no time: only the landmark can place them
    summary = tag([lib], str(trained_run / "best.pt"), TagOptions(geotag=True, recall=1.0, spread_minutes=0), CFG)
    assert summary.tagged and not summary.failed
    sure = {p for p in summary.tagged
            if json.loads(Path(f"{p}.json").read_text())["landmark_search"]["tags"][0]["confidence"] >= floor}
    assert set(summary.geotagged) == sure and set(summary.geotag_held_back) == set(summary.tagged) - sure
    for photo in summary.geotag_held_back:
        assert exif_gps(Path(f"{photo}.xmp")) is None  # keywords, but no position


def test_a_city_in_places_csv_wins_over_the_nearest_town(tmp_path):
    """The geocoder names the nearest town of 1,000+ people: Uran, across the harbour, for the Gateway of India."""
    from landmark_search.places.table import resolve_places

    (tmp_path / "places.csv").write_text("class,latitude,longitude,name,city,country\n"
                                         "gateway,18.9220,72.8347,Gateway of India,Mumbai,\n"
                                         "gateway_unnamed,18.9220,72.8347,,,\n", encoding="utf-8")
    places = resolve_places(["gateway", "gateway_unnamed"], [], tmp_path)
    assert (places["gateway"].city, places["gateway"].country) == ("Mumbai", "India")  # country still looked up
    assert (places["gateway_unnamed"].city, places["gateway_unnamed"].country) == ("Uran", "India")
