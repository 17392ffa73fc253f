"""The engine that runs a model body's forward on the CPU: torch eager, or its ONNX export in ONNX Runtime or OpenVINO.

Eager torch is slow for depthwise-convolution models (EfficientNet-Lite0: ReLU6, batch norm and the
"same" padding each a separate memory pass; see benchmarks/README.md). The body + pooling is exported
once to ONNX and run by a runtime that fuses them; the embedding head and classifier stay in torch
(microseconds). The export is a file of data (a graph and weights, no code), cached per user under a
key made of what it was built from (the body's weights, its input size, torch, the runtime, the CPU
flags); the key is written inside the file and checked before the file is used, so a stale, renamed or
foreign artefact is rebuilt, never run. Any route that is missing (package not installed, export
failure) falls back to eager torch without a word, because the vectors stay the same within tolerance.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import nn

from ..config import INT8_RECIPE
from ..fsutil import atomic_write_bytes, user_cache_dir
from .runtime import cpu_flags, cpu_has_fast_bf16

log = logging.getLogger(__name__)
T = TypeVar("T")

ENGINE_FORMAT = "landmark-search-engine"
ENGINE_VERSION = 1
KEY_FIELD = "landmark_search_key"
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
BACKEND_ENV = "LANDMARK_BACKEND"
# Routes `auto` tries in this order (the first that loads wins); see benchmarks/README.md for the figures.
AUTO_ROUTES = ("ort-int8", "ort-fp32")
# The CPU flags that change which kernels a runtime picks; the key holds them so a cache copied to
# another machine is rebuilt there.
_KEY_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile")


@dataclass(frozen=True)
class Engine:
    """A compiled body: normalised float NCHW images -> pooled backbone features (fp32, on the CPU)."""

    route: str  # "ort-fp32", "ort-int8", "ov-bf16", ...
    run: Callable[[torch.Tensor], torch.Tensor]
    path: Path

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)


def has_depthwise(body: nn.Module) -> bool:
    """Grouped/depthwise convolutions: where eager torch is far from the runtimes (ResNets are not)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in body.modules())


def weights_digest(module: nn.Module) -> str:
    """sha256 of a module's class, parameter names, shapes and bytes (what the export is a function of)."""
    digest = hashlib.sha256(type(module).__qualname__.encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def engine_key(body: nn.Module, image_size: int, kind: str, mean=None, std=None) -> str:
    """The identity an artefact must carry to be used for this body, size, kind, torch, exporter and CPU;
    for int8 also the normalisation its calibration images went through (mean, std)."""
    flags = cpu_flags()
    key = {"format": ENGINE_FORMAT, "version": ENGINE_VERSION, "kind": kind, "image_size": int(image_size),
           "body": weights_digest(body), "torch": torch.__version__, "exporter": _exporter(kind),
           "cpu": [f for f in _KEY_FLAGS if f in flags]}
    if kind == "int8":
        key["recipe"] = INT8_RECIPE
        key["calibration"] = {"mean": [round(float(v), 6) for v in mean], "std": [round(float(v), 6) for v in std]}
    return json.dumps(key, sort_keys=True)


def engine_dir() -> Path:
    """Where artefacts are cached: $LANDMARK_ENGINE_CACHE, else ~/.cache/landmark-search/engines."""
    override = os.environ.get("LANDMARK_ENGINE_CACHE")
    return Path(override) if override else user_cache_dir("engines")


def artefact_path(key: str) -> Path:
    """Where the artefact with this key is cached (its name is a digest of the key)."""
    return engine_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.onnx"


def _exporter(kind: str) -> str:
    """The version of what writes the artefact: onnx for the fp32 graph, ONNX Runtime's quantizer for int8.

    Read from the installed package's metadata: importing onnx costs ~0.7 s, and a cached artefact never
    needs it (a missing package raises PackageNotFoundError, an ImportError)."""
    from importlib.metadata import version

    if kind == "int8":
        import onnxruntime

        return f"onnx {version('onnx')}, onnxruntime {onnxruntime.__version__}"
    return f"onnx {version('onnx')}"


def _export_onnx(body: nn.Module, image_size: int) -> "onnx.ModelProto":  # noqa: F821
    """The fp32 graph of body + pooling with a dynamic batch axis."""
    import onnx

    buf = io.BytesIO()
    # What the engine computes: body, global average pooling, flatten (LandmarkModel.features).
    pooled = nn.Sequential(body, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    pooled = pooled.eval().float().to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notices
        torch.onnx.export(pooled, torch.zeros(1, 3, image_size, image_size), buf, input_names=["images"],
                          output_names=["features"], dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
                          opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def _quantize_int8(fp32: "onnx.ModelProto", calibration: np.ndarray) -> "onnx.ModelProto":  # noqa: F821
    """ONNX Runtime's static int8 quantization (QDQ, per-channel weights), calibrated on fixed scenes; the stem
    convolution stays float (INT8_RECIPE)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.chunks = iter([{"images": calibration[i:i + 8]} for i in range(0, len(calibration), 8)])

        def get_next(self):
            return next(self.chunks, None)

    with tempfile.TemporaryDirectory(prefix="landmark-int8-") as tmp:
        src, pre, out = Path(tmp, "fp32.onnx"), Path(tmp, "pre.onnx"), Path(tmp, "int8.onnx")
        onnx.save(fp32, src)
        quant_pre_process(str(src), str(pre))
        stem = next(node.name for node in onnx.load(str(pre)).graph.node if node.op_type == "Conv")
        quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=[stem])
        return onnx.load(str(out))


def _build(body: nn.Module, image_size: int, kind: str, key: str, mean, std) -> bytes:
    """Export (and for int8, quantize) the body, with `key` inside the file."""
    import onnx

    model = _export_onnx(body, image_size)
    if kind == "int8":
        from ..data.transforms import normalize_uint8
        from .quantize import calibration_batch

        calibration = normalize_uint8(calibration_batch(image_size), mean, std).numpy()
        model = _quantize_int8(model, calibration)
    onnx.helper.set_model_props(model, {KEY_FIELD: key})
    return model.SerializeToString()


def read_key(data: bytes) -> str | None:
    """The key an artefact says it was built for (None: not one of ours, or unreadable)."""
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception:  # a truncated or foreign file: not ours
        return None
    return next((p.value for p in model.metadata_props if p.key == KEY_FIELD), None)


def artefact(body: nn.Module, image_size: int, kind: str, mean, std,
             open_: Callable[[bytes], tuple[T, str | None]]) -> tuple[Path, T]:
    """The cached ONNX file (`kind` fp32 or int8) opened by `open_` (which also returns the key inside the
    file), built once, and again when the file is unreadable or its key does not match this body."""
    key = engine_key(body, image_size, kind, mean, std)
    path = artefact_path(key)
    try:
        opened, found = open_(path.read_bytes())
        if found == key:  # checked against the body it is about to run for
            return path, opened
        log.info("%s: built for another model or version; rebuilding it", path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # a truncated or foreign file: rebuilt, never run
        log.info("%s: unreadable (%s); rebuilding it", path, exc)
    data = _build(body, image_size, kind, key, mean, std)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    opened, _ = open_(data)
    return path, opened


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _ort_session(data: bytes) -> tuple[Callable[[torch.Tensor], torch.Tensor], str | None]:
    """An ONNX Runtime session's run function, and the key stored in the file (read by the runtime
    itself, so checking a cached artefact costs no onnx import and no second parse)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = _threads()
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # Idle intra-op threads sleep instead of spinning: the decode threads need those cores between and
    # during batches. wonders7 through iter_embeddings, 2 cores, 2 decode threads: 222-242 img/s vs
    # 172-192 spinning (pure forward unchanged within noise).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(session.run(None, {"images": arr})[0])

    return run, session.get_modelmeta().custom_metadata_map.get(KEY_FIELD)


def _ov_compiled(path: Path, precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": _threads()})
    request = compiled.create_infer_request()

    def run(x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().float().contiguous().cpu().numpy()
        return torch.from_numpy(np.array(request.infer({0: arr})[0], copy=True))

    return run


def _load(body: nn.Module, image_size: int, route: str, mean, std) -> Engine:
    """Route "RUNTIME-PRECISION": ort-fp32 / ort-int8 run in ONNX Runtime; ov-f32 / ov-bf16 in OpenVINO,
    which compiles the fp32 graph at the precision asked for. A missing package raises ImportError."""
    runtime, precision = route.split("-")
    if runtime == "ov":
        import openvino  # noqa: F401

        path, _ = artefact(body, image_size, "fp32", mean, std, lambda data: (None, read_key(data)))
        return Engine(route, _ov_compiled(path, precision), path)
    import onnxruntime  # noqa: F401

    path, run = artefact(body, image_size, precision, mean, std, _ort_session)
    return Engine(route, run, path)


def requested_backend(backend: str = "auto") -> str:
    """`backend`, or where it is "auto", $LANDMARK_BACKEND (torch turns the other runtimes off)."""
    return os.environ.get(BACKEND_ENV, "auto") if backend == "auto" else backend


def routes_for(backend: str, precision: str) -> tuple[str, ...]:
    """Routes to try, best first, for a backend name and the `--precision` asked for.

    fp32 keeps fp32 numerics (ort-fp32, ov-f32); bf16 is OpenVINO's bf16 where the CPU has it; auto is
    the fastest route within 1 point of fp32's retrieval mAP and accuracy (AUTO_ROUTES); int8 stays
    with torch's quantization (models/quantize.py).
    """
    if backend not in BACKENDS:
        from ..errors import LandmarkError

        raise LandmarkError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch" or precision not in ("auto", "fp32", "bf16"):
        return ()
    bf16 = ("ov-bf16",) if cpu_has_fast_bf16() else ()
    table = {"auto": {"fp32": ("ort-fp32", "ov-f32"), "bf16": bf16, "auto": AUTO_ROUTES},
             "onnxruntime": {"fp32": ("ort-fp32",), "bf16": (), "auto": ("ort-int8", "ort-fp32")},
             "openvino": {"fp32": ("ov-f32",), "bf16": bf16, "auto": bf16 or ("ov-f32",)}}
    return table[backend][precision]


def select_engine(body: nn.Module, image_size: int, mean, std, routes: tuple[str, ...]) -> Engine | None:
    """The first of `routes` that loads for this body on this CPU, or None (run eager torch)."""
    for route in routes:
        try:
            return _load(body, image_size, route, mean, std)
        except Exception as exc:  # missing package, export or runtime failure: the next route, then eager
            log.debug("engine %s unavailable: %s: %s", route, type(exc).__name__, exc)
    return None
