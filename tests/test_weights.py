"""torchvision ImageNet weights: the real download path, against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import threading

import pytest
import torch

from landmark_search.errors import ModelNotFoundError
from landmark_search.models import build_model
from landmark_search.models.pretrained import fetch_torchvision_weights, weights_cache_dir


class _Weights:
    def __init__(self, url: str):
        self.url = url


@pytest.fixture()
def weights_server(tmp_path):
    state = {"w": torch.arange(6.0)}
    raw = tmp_path / "raw.pth"
    torch.save(state, raw)
    prefix = hashlib.sha256(raw.read_bytes()).hexdigest()[:8]
    served = tmp_path / "srv"
    served.mkdir()
    name = f"tiny-{prefix}.pth"
    (served / name).write_bytes(raw.read_bytes())
    (served / "tiny-deadbeef.pth").write_bytes(raw.read_bytes())  # wrong hash prefix
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(served), **kw)

        def log_message(self, *a):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", name, requests
    httpd.shutdown()


def test_download_once_into_the_torch_cache(weights_server, monkeypatch):
    base, name, requests = weights_server
    monkeypatch.setenv("LANDMARK_WEIGHTS_MIRROR", base)
    weights = _Weights(f"https://download.pytorch.org/models/{name}")
    state = fetch_torchvision_weights(weights, progress=False)
    assert torch.equal(state["w"], torch.arange(6.0))
    assert (weights_cache_dir() / name).is_file()
    n = len(requests)
    fetch_torchvision_weights(weights, progress=False)  # cached: no second request
    assert len(requests) == n


def test_corrupt_download_is_refused(weights_server, monkeypatch):
    base, _, _ = weights_server
    monkeypatch.setenv("LANDMARK_WEIGHTS_MIRROR", base)
    with pytest.raises(ModelNotFoundError, match="cannot download"):
        fetch_torchvision_weights(_Weights("https://x/models/tiny-deadbeef.pth"), progress=False)
    assert not (weights_cache_dir() / "tiny-deadbeef.pth").exists()


def test_offline_resnet_says_where_to_put_the_file_and_the_alternatives(monkeypatch):
    monkeypatch.setenv("LANDMARK_WEIGHTS_MIRROR", "http://127.0.0.1:9")  # nothing listens on port 9
    with pytest.raises(ModelNotFoundError) as err:
        build_model("resnet34", 5)
    message = str(err.value)
    assert "resnet34-b627a593.pth" in message and str(weights_cache_dir()) in message
    assert "--weights none" in message and "efficientnet_lite0" in message
    assert build_model("resnet34", 5, pretrained=False).classifier.out_features == 5
