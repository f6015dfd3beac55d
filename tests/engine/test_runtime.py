"""engine.runtime: provider selection with a real CUDA initialisation probe, cached sessions."""
from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from engine import runtime  # noqa: E402
from engine.match.ops import ONNX_DIR  # noqa: E402


def test_cpu_is_always_available():
    providers, msg = runtime.select_providers("cpu")
    assert providers == ["CPUExecutionProvider"] and "CPU" in msg


def test_auto_uses_cuda_only_when_it_initialises():
    providers, msg = runtime.select_providers("auto")
    ok, why = runtime._cuda_works()
    if ok:
        assert providers[0] == "CUDAExecutionProvider"
    else:
        assert providers == ["CPUExecutionProvider"]
        assert why in msg and "CPU" in msg
        with pytest.raises(RuntimeError, match="cuda"):
            runtime.select_providers("cuda")


def test_bad_device_name():
    with pytest.raises(ValueError):
        runtime.select_providers("tpu")


def test_sessions_are_cached_and_run():
    s1 = runtime.get_session(ONNX_DIR / "features.onnx", "cpu", threads=1)
    s2 = runtime.get_session(ONNX_DIR / "features.onnx", "cpu", threads=1)
    assert s1 is s2
    out = s1.run(None, {"image": np.random.rand(1, 1, 24, 32).astype(np.float32)})[0]
    assert out.shape == (1, 8, 24, 32) and np.isfinite(out).all()


def test_sessions_without_memory_arena():
    """``arena=False`` (what a memory limit uses): a separately cached session with ONNX
    Runtime's CPU arena off, the same results; Kernels pass it to all their sessions."""
    from engine.match.ops import KERNEL_NAMES, Kernels

    path = ONNX_DIR / "features.onnx"
    pooled = runtime.get_session(path, "cpu", threads=1)
    lean = runtime.get_session(path, "cpu", threads=1, arena=False)
    assert lean is not pooled and lean is runtime.get_session(path, "cpu", threads=1, arena=False)
    assert pooled.get_session_options().enable_cpu_mem_arena
    assert not lean.get_session_options().enable_cpu_mem_arena
    x = {"image": np.random.default_rng(0).random((1, 1, 24, 32), np.float32)}
    np.testing.assert_array_equal(lean.run(None, x)[0], pooled.run(None, x)[0])

    k_lean, k_pooled = Kernels("cpu", 1, arena=False), Kernels("cpu", 1)
    assert not k_lean.arena and k_pooled.arena
    assert all(not k_lean._s[n].get_session_options().enable_cpu_mem_arena for n in KERNEL_NAMES)
    assert all(k_pooled._s[n].get_session_options().enable_cpu_mem_arena for n in KERNEL_NAMES)
    img = x["image"][0, 0]
    np.testing.assert_array_equal(k_lean.features(img), k_pooled.features(img))
