"""The geometric check (models/verify.py): the same scene seen anew is matched, a different one is not, the
references survive the checkpoint and reject damage, and a matched photo below the threshold keeps its tag."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from conftest import facade, seen_anew
from landmark_search.models.verify import (MIN_INLIERS, References, build_references, check, choose_references,
                                           inliers, local_features, photo_local_features)


def test_the_same_scene_seen_anew_matches_and_a_different_one_does_not():
    scene, again, other = (local_features(i) for i in (facade(1), seen_anew(facade(1)), facade(2)))
    assert len(scene.desc) > 100 and scene.desc.dtype == np.uint8
    assert inliers(again, scene) >= 3 * MIN_INLIERS
    assert inliers(other, scene) < MIN_INLIERS
    assert inliers(again, scene) == inliers(again, scene)  # RANSAC is seeded
    blank = local_features(Image.new("RGB", (200, 100), "white"))  # no keypoints at all
    assert len(blank.desc) == 0 and inliers(blank, scene) == 0


@pytest.fixture(scope="module")
def refs():
    """Two classes of three scenes each; whole-photo features that put each class near itself."""
    parts = [local_features(facade(s)) for s in range(10, 16)]
    labels = np.array([0, 0, 0, 1, 1, 1])
    feats = np.eye(2, dtype=np.float32)[labels] + 0.01 * np.arange(6, dtype=np.float32)[:, None]
    return build_references(feats / np.linalg.norm(feats, axis=1, keepdims=True), labels, parts)


def test_references_check_only_the_window_and_survive_their_state(refs, tmp_path):
    assert refs is not None and refs.min_inliers >= MIN_INLIERS and len(refs.labels) == 6
    photo = tmp_path / "again.jpg"
    seen_anew(facade(14)).save(photo, quality=90)  # a new photo of class 1's second scene
    paths, classes = [photo, photo, photo], np.array([1, 0, 1])
    feats = np.tile(refs.feats[4], (3, 1))
    got = check(paths, classes, feats, np.array([0.5, 0.5, 0.9], np.float32), 0.3, 0.8, refs)
    assert got[0] >= refs.min_inliers  # its class's references include the scene
    assert 0 <= got[1] < refs.min_inliers  # class 0 has no such scene
    assert got[2] == -1  # confident enough: not checked
    # The run's decoding limit (--max-pixels) holds for the check too: over it, the photo is not matched.
    strict = check(paths, classes, feats, np.array([0.5, 0.5, 0.9], np.float32), 0.3, 0.8, refs,
                   local=lambda p: photo_local_features(p, max_pixels=100))
    assert strict.tolist() == [0, 0, -1] and photo_local_features(photo, max_pixels=100) is None
    state = refs.to_state()
    back = References.from_state(state)
    assert back.min_inliers == refs.min_inliers and np.array_equal(back.desc, refs.desc)
    assert np.array_equal(back.labels, refs.labels) and np.allclose(back.feats, refs.feats, atol=1e-3)
    for bad in ({"offsets": state["offsets"][:-1]}, {"desc": state["desc"][:, :64]}, {"min_inliers": 1},
                {"version": 99}, {"xy": state["xy"][1:]}):
        with pytest.raises(ValueError):
            References.from_state({**state, **bad})


def test_choose_references_keeps_at_most_thirty_a_class_seeded():
    labels = [0] * 50 + [1] * 5
    chosen = choose_references(labels, seed=3)
    assert (np.asarray(labels)[chosen] == 0).sum() == 30 and (np.asarray(labels)[chosen] == 1).sum() == 5
    assert np.array_equal(chosen, choose_references(labels, seed=3))
    assert build_references(np.ones((2, 4), np.float32), [0, 0], [local_features(facade(1))] * 2) is None


def test_a_photo_below_the_threshold_keeps_its_tag_only_when_matched(trained_run, synth_data):
    """The decision: below the open set's threshold a photo is unknown, unless its check reached the
    references' threshold; above it the check changes nothing."""
    from landmark_search.config import EmbedConfig
    from landmark_search.embeddings import embed_paths, load_model
    from landmark_search.predict import decide

    model = load_model(trained_run / "best.pt")
    assert model.openset.references is not None  # `landmark train` stored them
    photo = next((synth_data / "test").rglob("*.jpg"))
    out = embed_paths([photo], model, EmbedConfig(progress=False, workers=0))
    probs, feats = out.probs[0], out.features[0]
    confidence = decide(probs, feats, model).predictions[0].confidence
    need = model.openset.references.min_inliers
    calibrated = model.openset
    model.openset = replace(calibrated, threshold=confidence + 0.01)  # the photo just below the threshold
    matched = decide(probs, feats, model, inliers=need)
    assert matched.kept and matched.verified and not matched.unknown and matched.inliers == need
    for weak in (need - 1, -1, None):
        assert decide(probs, feats, model, inliers=weak).unknown, weak
    model.openset = replace(calibrated, threshold=confidence + 0.01, references=None)
    assert decide(probs, feats, model, inliers=need).unknown  # no references: no second test
    model.openset = replace(calibrated, threshold=confidence - 0.01)
    above = decide(probs, feats, model, inliers=0)
    assert above.kept and not above.verified  # confident enough: the check changes nothing


def test_classify_and_tag_say_when_the_keypoints_kept_a_tag(trained_run, synth_data, tmp_path):
    """A model whose whole-photo threshold nothing reaches (above 1): a training photo (its own reference: every keypoint
    matches) keeps its landmark through the check, and classify and the JSON sidecar say so; a scene of another
    place stays unknown."""
    import json

    from conftest import invoke

    from landmark_search.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    model, _ = load_checkpoint(trained_run / "best.pt")
    payload = read_checkpoint(trained_run / "best.pt")
    strict = tmp_path / "strict.pt"
    save_checkpoint(strict, model, payload["meta"], extra={"openset": {**payload["openset"], "threshold": 1.01}})
    lib = tmp_path / "lib"
    lib.mkdir()
    # the 64 px synthetic photos have 8-30 keypoints: the one with the most
    train_photo = max(sorted((synth_data / "train").rglob("*.jpg")), key=lambda p: len(photo_local_features(p).desc))
    assert len(photo_local_features(train_photo).desc) >= MIN_INLIERS + 4
    (lib / "known.jpg").write_bytes(train_photo.read_bytes())
    facade(7).save(lib / "elsewhere.jpg", quality=90)
    said = invoke("classify", lib / "known.jpg", lib / "elsewhere.jpg", "--model", strict, ok=True).output
    lines = said.splitlines()
    known = next(line for line in lines if line.startswith(str(lib / "known.jpg")))
    assert "keypoints match a training photo" in known, said
    assert next(line for line in lines if line.startswith(str(lib / "elsewhere.jpg"))).endswith("landmarks"), said
    invoke("tag", lib, "--model", strict, "--geotag", ok=True)
    entry = json.loads((lib / "known.jpg.json").read_text())["landmark_search"]
    assert entry["tags"] and entry["matched_keypoints"] >= MIN_INLIERS
    # no confidence reaches the geotag threshold either: the match alone places it
    assert entry["place"]["name"] == entry["tags"][0]["label"]
    assert not (lib / "elsewhere.jpg.json").exists()  # unknown: nothing to record


def test_a_checkpoint_with_damaged_references_is_one_line_naming_it(trained_run, tmp_path):
    from conftest import invoke, one_line_error

    from landmark_search.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint

    model, _ = load_checkpoint(trained_run / "best.pt")
    payload = read_checkpoint(trained_run / "best.pt")
    damaged = tmp_path / "damaged.pt"
    offsets = payload["openset"]["refs_offsets"].clone()
    offsets[-1] += 1000  # points past the descriptors it holds
    save_checkpoint(damaged, model, payload["meta"], extra={"openset": {**payload["openset"], "refs_offsets": offsets}})
    photo = tmp_path / "p.jpg"
    facade(3).save(photo)
    one_line_error(invoke("classify", photo, "--model", damaged), str(damaged), "open-set calibration is damaged")
