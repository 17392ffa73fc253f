"""Device and precision selection: bf16 autocast + channels_last where the CPU has bf16 units."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings

import torch

from ..errors import LandmarkError


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none: macOS, Windows)."""
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((line for line in fh if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.split(":", 1)[-1].split())


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AVX512-BF16 or AMX-BF16, where bf16 matmuls are native (not emulated)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cpu_has_fast_int8() -> bool:
    """True on CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX-INT8 dot-product instructions."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LandmarkError("--device cuda: no CUDA GPU is visible; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LandmarkError("--device mps: Apple MPS is not available; use --device auto or cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise LandmarkError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def select_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `auto|fp32|bf16|fp16`; None means full fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type == "cpu":
            raise LandmarkError("--precision fp16 needs a GPU; on a CPU use bf16 or auto")
        return torch.float16
    if precision != "auto":
        raise LandmarkError(f"unknown precision {precision!r}; use auto, fp32, bf16 or fp16 "
                            "(or int8 with classify, tag, index, similar and evaluate)")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_fast_bf16() and os.environ.get("LANDMARK_NO_BF16") != "1":
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context, or a no-op one for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def use_channels_last(device: torch.device, dtype: torch.dtype | None) -> bool:
    """channels_last pays off with oneDNN bf16 kernels on CPU and tensor cores on GPU."""
    return dtype is not None


def default_workers() -> int:
    """Decode threads / DataLoader workers that don't oversubscribe small machines (or a `taskset` limit)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    return 0 if cores <= 1 else min(4, cores)


@contextlib.contextmanager
def quiet_jit():
    """TorchScript works in torch 2.14 but warns on every call; exports keep supporting it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield
