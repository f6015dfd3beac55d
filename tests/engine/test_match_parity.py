"""The committed ONNX kernels: torch vs onnxruntime parity, and committed == fresh export."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from engine.match import kernels_torch  # noqa: E402
from engine.match.export import export_all  # noqa: E402
from engine.match.ops import ONNX_DIR, Kernels  # noqa: E402


def _inputs(name: str, h: int = 37, w: int = 53, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = kernels_torch.N_FEATURES
    img = rng.random((1, 1, h, w)).astype(np.float32)
    feat = rng.standard_normal((1, c, h, w)).astype(np.float32)
    # a target that is the reference shifted by a few pixels, so the matcher has a true answer
    tgt = np.roll(feat, (2, -1), axis=(2, 3)) + 0.05 * rng.standard_normal(feat.shape).astype(np.float32)
    flow = (rng.standard_normal((1, 2, h, w)) * 1.5).astype(np.float32)
    if name == "features":
        return {"image": img}
    if name == "match":
        return {"ref": feat, "tgt": tgt, "flow": flow}
    if name == "lk":
        return {"ref": img[0, 0][None, None], "tgt": np.roll(img, 1, axis=3), "flow": flow}
    if name == "score":
        return {"ref_a": feat, "ref_b": np.roll(feat, 1, axis=3), "tgt": tgt, "flow": flow}
    coords = (rng.random((1, 2, 9, 11)) * [[[[w + 4]], [[h + 4]]]] - 2).astype(np.float32)
    return {"src": feat, "coords": coords}


@pytest.mark.parametrize("name", ["features", "match", "score", "warp", "lk"])
def test_torch_vs_onnxruntime(name):
    mod, _, inames, _, _ = kernels_torch.kernels()[name]
    feeds = _inputs(name)
    with torch.no_grad():
        ref = mod(*[torch.from_numpy(feeds[k]) for k in inames])
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(ONNX_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    assert len(got) == len(ref)
    for i, (r, g) in enumerate(zip(ref, got)):
        r = r.numpy()
        assert r.shape == g.shape
        if name == "match" and i == 0:
            # the arg-min may flip on exact ties; require agreement almost everywhere
            close = np.abs(r - g).max(axis=1) < 1e-3
            assert close.mean() > 0.995
        else:
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["features", "match", "score", "warp", "lk"])
def test_torch_kernels_run_on_the_inputs_device(name):
    """``--device torch-cuda`` moves the modules and inputs to the GPU: every tensor a kernel
    makes must follow its inputs' device. The "meta" device stands in for CUDA here (a tensor
    made on the CPU meets it and fails the same way; the first GPU run failed on that)."""
    mod, args, _, _, _ = kernels_torch.kernels()[name]
    with torch.no_grad():
        out = mod.to("meta")(*[a.to("meta") for a in args])
    for o in out if isinstance(out, (tuple, list)) else (out,):
        assert o.device.type == "meta"


def test_committed_graphs_match_fresh_export(tmp_path):
    export_all(tmp_path)
    fp16 = tuple(f"{n}_fp16" for n in kernels_torch.FP16_KERNELS)
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == sorted(
        f"{n}.onnx" for n in ("features", "match", "score", "warp", "lk") + fp16)
    for name in ("features", "match", "score", "warp", "lk") + fp16:
        feeds = _inputs(name.removesuffix("_fp16"), seed=1)
        a = ort.InferenceSession(str(ONNX_DIR / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        b = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
        for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5,
                                       err_msg=f"{name}.onnx is stale: run python -m engine.match.export")


def test_graphs_are_small_and_weightless():
    for p in ONNX_DIR.glob("*.onnx"):
        assert p.stat().st_size < 200_000, p


def test_flow_recovers_a_known_translation():
    """The coarse-to-fine matcher finds a sub-pixel translation of a textured image."""
    import cv2

    rng = np.random.default_rng(3)
    small = rng.random((30, 40)).astype(np.float32)
    img = cv2.resize(small, (160, 120), interpolation=cv2.INTER_CUBIC)
    m = np.float32([[1, 0, 7.3], [0, 1, -4.6]])
    moved = cv2.warpAffine(img, m, (160, 120), borderMode=cv2.BORDER_REFLECT)
    k = Kernels("cpu")
    a, b = k.pyramid(img, 3), k.pyramid(moved, 3)
    flow, cost, _ = k.flow(a, b)
    inner = flow[:, 20:-20, 20:-20].reshape(2, -1)
    med = np.median(inner, axis=1)
    np.testing.assert_allclose(med, [7.3, -4.6], atol=0.15)
    assert (np.abs(inner[0] - 7.3) < 0.5).mean() > 0.9
