"""Keypoint verification for grouping (curation/placematch.py): the same place seen anew is matched and a different
one is not, counts are remembered per content hash, each photo's keypoints are found once and not all held at once,
and a verified pair the vote dropped joins two groups."""

from __future__ import annotations

import weakref
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from conftest import facade, seen_anew
from landmark_search.curation import placematch
from landmark_search.curation.grouping import cluster
from landmark_search.curation.placematch import SamePlace
from landmark_search.models.verify import LocalFeatures


def test_the_same_place_is_matched_remembered_by_content_and_a_broken_photo_is_no_match(tmp_path):
    paths = [tmp_path / n for n in ("a.jpg", "a_again.jpg", "b.jpg", "broken.jpg")]
    facade(1).save(paths[0], quality=90)
    seen_anew(facade(1)).save(paths[1], quality=90)
    facade(2).save(paths[2], quality=90)
    paths[3].write_bytes(b"\xff\xd8 not a jpeg")
    index = tmp_path / "idx"
    index.mkdir()
    pairs = np.array([[0, 1], [0, 2], [1, 2], [1, 3]])
    check = SamePlace(paths, ["ha", "ha2", "hb", "hx"], index)
    assert check(pairs).tolist() == [True, False, False, False] and check.matched == 4
    counts = check.inliers(pairs)
    assert counts[0] >= 3 * placematch.SAME_PLACE_INLIERS and counts[3] == 0
    assert check.matched == 5  # all remembered but the pair whose photo does not decode
    check.close()
    assert (index / placematch.FILE_NAME).is_file()
    # Another run, the photos renamed (same bytes, same hashes): nothing is matched again but the pair whose photo
    # did not decode (a drive that was away must not leave a 0 behind for good).
    again = SamePlace([paths[1], paths[0], paths[2], paths[3]], ["ha2", "ha", "hb", "hx"], index)
    assert again.inliers([[1, 0], [2, 1]]).tolist() == [counts[0], counts[1]] and again.matched == 0
    assert again.inliers([[0, 3]]).tolist() == [0] and again.matched == 1
    # An edited photo (new bytes, new hash) is matched anew.
    assert again.inliers([[1, 2]]).tolist() == [counts[1]]
    assert again.inliers([[0, 2]]).tolist() == [counts[2]] and again.matched == 1
    edited = SamePlace(paths, ["ha", "ha2", "hb-edited", "hx"], index)
    assert edited.inliers([[0, 2]]).tolist() == [counts[1]] and edited.matched == 1
    edited.close()
    # A damaged cache value (not a count) is matched again, not trusted.
    import sqlite3

    with sqlite3.connect(index / placematch.FILE_NAME) as db:
        db.execute("UPDATE pairs SET score = 'lots' WHERE a = 'ha' AND b = 'ha2'")
    damaged = SamePlace(paths, ["ha", "ha2", "hb", "hx"], index)
    assert damaged.inliers([[0, 1]]).tolist() == [counts[0]] and damaged.matched == 1
    # The run's decoding limit (--max-pixels) holds for the check: photos over it match nothing.
    strict = SamePlace(paths, ["ha", "ha2", "hb", "hx"], None, max_pixels=100)
    assert strict.inliers([[0, 1]]).tolist() == [0] and strict.matched == 1


def test_a_stopped_check_keeps_the_chunks_it_matched(tmp_path, monkeypatch):
    monkeypatch.setattr(placematch, "CHUNK", 2)
    paths = [tmp_path / f"p{i}.jpg" for i in range(6)]
    for i, path in enumerate(paths):
        facade(i).save(path, quality=90)
    pairs = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]])
    calls = []
    real = SamePlace._local

    def stopping(self, row):
        calls.append(row)
        if len(calls) > 4:  # the user presses Ctrl-C while the second chunk is read
            raise KeyboardInterrupt
        return real(self, row)

    monkeypatch.setattr(SamePlace, "_local", stopping)
    check = SamePlace(paths, [f"h{i}" for i in range(6)], tmp_path)
    try:
        check.inliers(pairs)
    except KeyboardInterrupt:
        pass
    check.close()
    monkeypatch.setattr(SamePlace, "_local", real)
    again = SamePlace(paths, [f"h{i}" for i in range(6)], tmp_path)
    again.inliers(pairs)
    assert 0 < again.matched < len(pairs)  # the chunks done before the stop were not matched again


def test_each_photos_keypoints_are_found_once_and_few_are_held_at_once(monkeypatch):
    monkeypatch.setattr(placematch, "CHUNK", 4)
    n = 60
    rank = np.random.default_rng(0).permutation(n)  # photo numbers unrelated to their place in the chain
    pairs = np.array([(rank[i], rank[j]) for i in range(n) for j in (i + 1, i + 2) if j < n])
    pairs = pairs[np.random.default_rng(1).permutation(len(pairs))]
    calls, made, peak = Counter(), [], [0]

    def local(row):
        calls[row] += 1
        found = LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))
        made.append(weakref.ref(found))
        peak[0] = max(peak[0], sum(ref() is not None for ref in made))  # keypoints still held
        return found

    with ThreadPoolExecutor(2) as pool:
        counts = placematch._matched(pairs, local, pool, None)
    assert sorted(calls) == list(range(n)) and set(calls.values()) == {1}
    assert peak[0] <= 8, peak[0]  # of 60 (55 when the pairs are taken in the order given)
    assert counts.tolist() == [0] * len(pairs)


def test_a_verified_pair_the_vote_dropped_joins_two_groups():
    """Eight seeded places of 12 photos (as in test_graph_grouping_sees_past_strong_shared_variation), the first
    two being two views of one place: near enough for some runs to join them, far enough for the vote to keep
    them apart."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((8, 16))
    centres[1] = centres[0] + 0.6 * rng.standard_normal(16)
    views = np.repeat(np.arange(8), 12)
    x = (centres[views] + 0.25 * rng.standard_normal((96, 16))).astype(np.float32)
    place = np.where(views == 1, 0, views)
    plain = cluster(x)
    assert all(len(set(plain[views == v])) == 1 for v in range(8)) and len(set(plain)) == 8
    asked = []

    def same_place(pairs, progress):
        asked.append(pairs)
        return place[pairs[:, 0]] == place[pairs[:, 1]]

    joined = cluster(x, same_place=same_place)
    assert all(len(set(joined[place == p])) == 1 for p in set(place.tolist())) and len(set(joined)) == 7
    asked = np.concatenate(asked)
    assert (views[asked[:, 0]] != views[asked[:, 1]]).any()  # only pairs the vote dropped are asked about
    assert not (plain[asked[:, 0]] == plain[asked[:, 1]]).all()
    nothing = cluster(x, same_place=lambda pairs, progress: np.zeros(len(pairs), bool))
    assert nothing.tolist() == plain.tolist()


def test_group_checks_keypoints_unless_told_not_to_and_remembers_in_the_index_folder(tmp_path):
    from landmark_search.curation.grouping import GroupOptions, group_indexed
    from landmark_search.index.store import PhotoRecord

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4, 16))[np.repeat(np.arange(4), 8)] + 0.2 * rng.standard_normal((32, 16)))
    x = x.astype(np.float32)
    paths = [tmp_path / f"p{i:02d}.jpg" for i in range(32)]  # never written: nothing decodes, nothing links
    records = [PhotoRecord(str(p), 1, 1, f"hash{i}") for i, p in enumerate(paths)]
    for verify, folder in ((False, tmp_path / "plain"), (True, tmp_path / "checked")):
        folder.mkdir()
        report = group_indexed(paths, records, x, "builtin", GroupOptions(any_subject=True, verify=verify),
                               index_dir=folder)
        assert len(report.groups) == 4
        assert (folder / placematch.FILE_NAME).exists() == verify
