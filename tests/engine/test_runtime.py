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
