"""onnxruntime session creation: execution-provider choice, kernel precision and a cached
session factory.

``select_providers("auto")`` uses CUDAExecutionProvider only when onnxruntime lists it AND a tiny
session really initialises on it (onnxruntime-gpu can be installed while the CUDA/cuDNN
libraries are missing; then ORT silently falls back to CPU or fails). Otherwise CPU, with a
message that says why.

Precision (``--precision``): :func:`resolve_precision` decides what the kernels run in. float16
is a GPU option: onnxruntime's CPU provider (1.23) has no float16 kernels for the graphs' ops
(Conv, Pad, Sub, Abs, ReduceMean, AveragePool, Concat) and wraps each in casts back to float32
-- measured on the match kernel at 320x240: the same memory and ~20% slower -- so a CPU run
asked for float16 runs float32 and says so. ``auto`` is float32 everywhere: float16 on CUDA has
not been measured safe yet.

Allocation cap (diagnostics, tests): ``WT_ORT_ARENA_MB`` caps ONNX Runtime's memory arena, so
an allocation beyond it really fails the way a full GPU does ("Available memory of X is smaller
than requested bytes of Y"; the kernels then retry in smaller bands, see
:class:`engine.match.ops.Kernels`). On the CPU the capped arena is one process-wide allocator
(``session.use_env_allocators``); on CUDA it is the provider's ``gpu_mem_limit``.
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


PRECISIONS = ("auto", "fp32", "fp16")
#: Why a CPU run asked for float16 runs float32 instead (see the module docstring).
FP16_CPU_FALLBACK = ("float16 is a GPU-only option: onnxruntime's CPU provider has no float16 "
                     "kernels for these graphs' ops (Conv, Pad, Sub, Abs, ReduceMean, AveragePool, "
                     "Concat) and would cast them back to float32 (measured: same memory, ~20% "
                     "slower)")


def resolve_precision(precision: str = "auto", device: str = "auto") -> tuple[str, str]:
    """The kernel precision ("fp32" or "fp16") that ``precision`` ("auto", "fp32", "fp16") gives
    on ``device`` and a message saying why. Raises ValueError for an unknown precision and, like
    :func:`select_providers`, RuntimeError when the device itself is unusable."""
    p = (precision or "auto").lower()
    if p not in PRECISIONS:
        raise ValueError(f"precision must be auto, fp32 or fp16, got {precision!r}")
    if p == "auto":
        return "fp32", "precision auto: float32 (float16 is not yet measured safe on a GPU)"
    if p == "fp32":
        return "fp32", "precision float32 (requested)"
    dev = (device or "auto").lower()
    if dev in TORCH_DEVICES:
        select_providers(dev)          # raises when the torch backend cannot run
        gpu = dev == "torch-cuda"
    else:
        gpu = _CUDA in select_providers(dev)[0]
    if gpu:
        return "fp16", ("precision float16 (requested): features, match and score kernels in "
                        "float16; coordinates, Lucas-Kanade and warps stay float32")
    return "fp32", f"float16 requested but running float32 on the CPU: {FP16_CPU_FALLBACK}"


def arena_limit_mb() -> int | None:
    """``WT_ORT_ARENA_MB`` as a positive whole number of MiB, else None (no cap)."""
    env = os.environ.get("WT_ORT_ARENA_MB", "").strip()
    if not env:
        return None
    try:
        v = int(env)
    except ValueError:
        raise ValueError(f"WT_ORT_ARENA_MB must be a whole number of MiB, got {env!r}") from None
    if v <= 0:
        raise ValueError(f"WT_ORT_ARENA_MB must be positive, got {v}")
    return v


_CPU_CAP: list[int] = []    # the capped process-wide CPU arena registered, in bytes (0 or 1 item)


def _register_cpu_cap(limit_bytes: int) -> None:
    """Register the process-wide capped CPU arena (once; onnxruntime allows one per device)."""
    import onnxruntime as ort

    if _CPU_CAP:
        if _CPU_CAP[0] != limit_bytes:
            raise RuntimeError(f"WT_ORT_ARENA_MB changed from {_CPU_CAP[0] >> 20} to "
                               f"{limit_bytes >> 20} MiB in one process; the cap is process-wide")
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                             ort.OrtMemType.DEFAULT)
    # max_mem, arena_extend_strategy 1 = kSameAsRequested (no power-of-two overshoot), defaults
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(int(limit_bytes), 1, -1, -1))
    _CPU_CAP.append(int(limit_bytes))


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
def _session(path: str, providers: tuple[str, ...], threads: int, arena: bool = True,
             cap_mb: int | None = None, lean: bool = False):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # 4 = fatal only: an allocation failure is an exception the kernels handle (retry in
    # bands); onnxruntime's own error log line would only duplicate it on stderr
    so.log_severity_level = 4
    so.enable_cpu_mem_arena = bool(arena)  # True is onnxruntime's default
    # lean: no memory pattern -- a pattern allocates a run's whole workspace as ONE block,
    # which a fragmented, nearly full arena cannot provide (measured under WT_ORT_ARENA_MB)
    so.enable_mem_pattern = not lean
    prov: list = list(providers)
    if cap_mb is not None:
        _register_cpu_cap(cap_mb << 20)
        so.add_session_config_entry("session.use_env_allocators", "1")
        prov = [(p, {"gpu_mem_limit": str(cap_mb << 20),
                     "arena_extend_strategy": "kSameAsRequested"}) if p == _CUDA else p
                for p in prov]
    return ort.InferenceSession(path, sess_options=so, providers=prov)


def get_session(model_path: str | Path, device: str = "auto", threads: int | None = None,
                arena: bool = True, lean: bool = False):
    """A cached ``onnxruntime.InferenceSession`` for ``model_path`` on ``device``.

    ``threads``: intra-op threads (None: :func:`default_threads`). ``arena``: keep ONNX
    Runtime's CPU memory arena (default): fastest, but the session holds on to its peak
    allocation for the life of the process (~100 MB for the tracker's kernels at 320x240).
    ``False`` frees memory after every run (for a memory limit); the results are the same.
    Sessions with and without the arena are cached separately. ``WT_ORT_ARENA_MB`` (see the
    module docstring) caps the arena instead, whatever ``arena`` says. ``lean``: the session
    :class:`engine.match.ops.Kernels` switches to after running out of memory (no memory
    pattern; same results).
    """
    providers, _ = select_providers(device)
    with _lock:
        return _session(str(Path(model_path).resolve()), tuple(providers),
                        threads or default_threads(), bool(arena), arena_limit_mb(), bool(lean))
