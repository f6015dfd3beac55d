"""onnxruntime session creation: execution-provider choice and a cached session factory.

``select_providers("auto")`` uses CUDAExecutionProvider only when onnxruntime lists it AND a tiny
session really initialises on it (onnxruntime-gpu can be installed while the CUDA/cuDNN
libraries are missing; then ORT silently falls back to CPU or fails). Otherwise CPU, with a
message that says why.
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

#: Measurement-only backends: the same kernels run from their torch source modules
#: (:mod:`engine.match.kernels_torch`) instead of the ONNX graphs -- for a GPU machine whose
#: onnxruntime has no CUDA provider. They need torch, so they are never used inside Blender.
TORCH_DEVICES = ("torch-cuda", "torch-cpu")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"
_lock = threading.Lock()


#: A committed, tiny graph used to probe whether a provider really initialises (no need for the
#: ``onnx`` package at run time, which Blender's bundle does not ship).
_PROBE_MODEL = Path(__file__).resolve().parent / "match" / "onnx" / "warp.onnx"


@functools.lru_cache(maxsize=None)
def _cuda_works() -> tuple[bool, str]:
    import numpy as np
    import onnxruntime as ort

    if _CUDA not in ort.get_available_providers():
        return False, "onnxruntime has no CUDA provider (CPU-only onnxruntime installed)"
    try:
        so = ort.SessionOptions()
        so.log_severity_level = 4
        s = ort.InferenceSession(str(_PROBE_MODEL), sess_options=so, providers=[_CUDA, _CPU])
        if _CUDA not in s.get_providers():
            return False, ("onnxruntime-gpu is installed but CUDA did not initialise (CUDA/cuDNN "
                           "libraries missing or no GPU)")
        s.run(None, {"src": np.ones((1, 1, 4, 4), np.float32),
                     "coords": np.ones((1, 2, 2, 2), np.float32)})
    except Exception as e:  # noqa: BLE001 - any provider failure means "use the CPU"
        return False, f"CUDA provider failed to initialise ({type(e).__name__}: {e})"
    return True, "CUDA provider initialised"


def select_providers(device: str = "auto") -> tuple[list[str], str]:
    """Execution providers for ``device`` ("auto", "cuda" or "cpu") and a message saying why.

    "cuda" raises RuntimeError when CUDA is not usable; "auto" falls back to the CPU.
    """
    device = (device or "auto").lower()
    if device in TORCH_DEVICES:
        return [], _torch_backend(device)
    if device not in ("auto", "cuda", "cpu"):
        raise ValueError(f"device must be auto, cuda, cpu, torch-cuda or torch-cpu, got {device!r}")
    if device == "cpu":
        return [_CPU], "using CPU (requested)"
    ok, why = _cuda_works()
    if ok:
        return [_CUDA, _CPU], "using CUDA GPU"
    if device == "cuda":
        raise RuntimeError(f"--device cuda requested but {why}")
    return [_CPU], f"using CPU: {why}"


def _torch_backend(device: str) -> str:
    """Check a torch backend can run; a message saying what runs (RuntimeError if it cannot)."""
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"--device {device} needs torch (a measurement backend; use auto, "
                           "cuda or cpu for normal work)") from None
    if device == "torch-cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device torch-cuda requested but torch sees no CUDA device")
    where = torch.cuda.get_device_name(0) if device == "torch-cuda" else "CPU"
    return f"using torch {torch.__version__} on {where} (the kernels' torch source, not ONNX)"


def default_threads() -> int:
    """Intra-op threads: WT_THREADS if set, else the CPUs this process may use."""
    env = os.environ.get("WT_THREADS")
    if env:
        return max(1, int(env))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@functools.lru_cache(maxsize=64)
def _session(path: str, providers: tuple[str, ...], threads: int, arena: bool = True):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = bool(arena)  # True is onnxruntime's default
    return ort.InferenceSession(path, sess_options=so, providers=list(providers))


def get_session(model_path: str | Path, device: str = "auto", threads: int | None = None,
                arena: bool = True):
    """A cached ``onnxruntime.InferenceSession`` for ``model_path`` on ``device``.

    ``threads``: intra-op threads (None: :func:`default_threads`). ``arena``: keep ONNX
    Runtime's CPU memory arena (default): fastest, but the session holds on to its peak
    allocation for the life of the process (~100 MB for the tracker's kernels at 320x240).
    ``False`` frees memory after every run (for a memory limit); the results are the same.
    Sessions with and without the arena are cached separately.
    """
    providers, _ = select_providers(device)
    with _lock:
        return _session(str(Path(model_path).resolve()), tuple(providers),
                        threads or default_threads(), bool(arena))
