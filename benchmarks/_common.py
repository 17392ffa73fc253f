"""Shared helpers for the benchmark scripts: machine description and results.json updates."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"
ROOT = Path(__file__).resolve().parent.parent
WONDERS7 = "wonders7_hoodiinii"


def evaldata_set(name: str = WONDERS7) -> Path:
    """The real-photo set `name` of evaldata: $LANDMARK_EVALDATA, else `shared/evaldata` beside this
    checkout or beside any folder above it (a clone anywhere under the workspace finds it), else
    /work/shared/evaldata. Exits with a one-line message naming the fix when none holds it."""
    candidates = [Path(os.environ["LANDMARK_EVALDATA"]).expanduser()] if os.environ.get("LANDMARK_EVALDATA") else []
    candidates += [parent / "shared" / "evaldata" for parent in ROOT.parents]
    candidates.append(Path("/work/shared/evaldata"))
    for base in candidates:
        for folder in (base / name, base):
            if folder.name == name and folder.is_dir() and any(folder.rglob("*.jpg")):
                return folder
    raise SystemExit(f"benchmarks: the evaldata set {name}/ was not found beside this checkout "
                     f"(../shared/evaldata/{name}); set LANDMARK_EVALDATA=/path/to/evaldata")


def machine() -> dict:
    """CPU model, cores, torch version: what a figure was measured on."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    return info


def previous_result(key: str) -> dict:
    """The entry `key` of the results file as the last run left it ({} when there is none)."""
    return json.loads(RESULTS.read_text()).get(key, {}) if RESULTS.exists() else {}


def update_results(key: str, value: dict) -> None:
    """Read-modify-write one entry of benchmarks/results.json."""
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {**value, "machine": machine()}
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(RESULTS)
