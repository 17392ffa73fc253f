"""int8 inference on x86 CPUs: post-training static quantization of a model's convolutional body.

The body (every conv layer) runs in int8 through FX graph mode quantization on the x86 backend
(fbgemm/oneDNN VNNI kernels); pooling, the embedding head and the classifier stay in fp32. The
activation ranges are calibrated on a fixed, seeded set of rendered scenes, so the same model gives
the same int8 model, and the same vectors, on every run and every machine.
"""

from __future__ import annotations

import copy
import functools
import logging
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import LandmarkError

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 48
# `--precision auto` quantizes only jobs this large: quantizing costs 1.5-4.5 s once (measured), and
# int8 saves ~8 ms per photo for a ResNet34 on a VNNI CPU, so smaller jobs would not win it back.
AUTO_INT8_MIN_PHOTOS = 256


def int8_supported() -> bool:
    """The x86 quantized engine is present (any x86-64 torch build)."""
    return "x86" in torch.backends.quantized.supported_engines


def require_cpu(device: torch.device) -> None:
    """int8 kernels are CPU kernels: refuse another device with the fix."""
    if device.type != "cpu":
        raise LandmarkError("--precision int8 runs on the CPU; add --device cpu or use --precision auto")


def int8_pays(body: nn.Module) -> bool:
    """int8 is a clear win for plain convolutions; grouped/depthwise ones (EfficientNet, MobileNet)
    ran slower than bf16 and lost 2.7 points of retrieval mAP on evaldata, so they stay in float."""
    return not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in body.modules())


@functools.lru_cache(maxsize=4)
def calibration_batch(image_size: int, count: int = CALIBRATION_IMAGES) -> torch.Tensor:
    """`count` seeded rendered scenes (sky, ground, structures, clutter, blur) as uint8 NCHW."""
    from PIL import ImageFilter

    from ..data.synth import STRUCTURES, render_scene

    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        img, _ = render_scene(i % len(STRUCTURES), rng, size=image_size)
        if i % 3 == 1:
            img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.5))))
        arr = np.asarray(img, dtype=np.float32)
        if i % 3 == 2:  # sensor-like noise, so texture channels see realistic ranges
            arr = arr + rng.normal(0.0, 12.0, arr.shape)
        images.append(torch.from_numpy(np.clip(arr, 0, 255).astype(np.uint8)).permute(2, 0, 1))
    return torch.stack(images)


def quantize_body(body: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of `body` (eval mode) calibrated on `calibration` (normalised float NCHW)."""
    if not int8_supported():
        raise LandmarkError("--precision int8 needs an x86-64 CPU build of torch; use --precision auto")
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    import torch.fx.config as fx_config

    torch.backends.quantized.engine = "x86"
    # FX's tracer otherwise captures and symbolises a Python traceback for every node it records (a quarter of
    # the quantisation's time); the quantised graph is never debugged from them.
    emit = fx_config.do_not_emit_stack_traces
    fx_config.do_not_emit_stack_traces = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FX quantization's deprecation notices
            prepared = prepare_fx(copy.deepcopy(body).eval(), get_default_qconfig_mapping("x86"), (calibration[:1],))
            with torch.inference_mode():
                for chunk in calibration.split(16):
                    prepared(chunk)
            return convert_fx(prepared)
    finally:
        fx_config.do_not_emit_stack_traces = emit


def int8_model(model: nn.Module, image_size: int, mean, std) -> nn.Module:
    """A shallow copy of a LandmarkModel whose body runs in int8 (head and classifier shared, fp32)."""
    if not int8_pays(model.body):
        log.warning("warning: int8 with depthwise convolutions (EfficientNet, MobileNet) loses accuracy (2.7 points "
                    "of retrieval mAP on evaldata) and is no faster; --precision auto keeps such models in float")
    from ..data.transforms import normalize_uint8

    calibration = normalize_uint8(calibration_batch(image_size), mean, std)
    quantized = copy.copy(model)
    quantized._modules = dict(model._modules)
    quantized.body = quantize_body(model.body, calibration)
    return quantized
