"""Kernel precision (``--precision auto|fp32|fp16``): the float16 graphs against their torch
source and the float32 graphs, coordinates kept float32, and the CPU fallback with its message.

Tolerances (measured on random 61x83 inputs, onnxruntime 1.23 CPU): onnxruntime's CPU provider
has no float16 kernels for these ops and computes them in float32 between inserted casts, so
the float16 graph on ORT is within ~1e-2 of torch's true float16 arithmetic (descriptors, scale
~1) and ~5e-4 (costs); the matcher's arg-min may flip where two shifts tie within float16's
step, so flows agree to 1e-2 px at >= 98% of pixels.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from engine import runtime  # noqa: E402
from engine.match import kernels_torch  # noqa: E402
from engine.match.ops import FP16_KERNEL_NAMES, ONNX_DIR, Kernels, graph_path  # noqa: E402
from engine.progress import parse_line  # noqa: E402
from engine.trackfile import load_trackfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_match_parity import _inputs  # noqa: E402
from track_synth import make_clip, write_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _torch_run(mod, names, feeds):
    with torch.no_grad():
        out = mod(*[torch.from_numpy(feeds[k]) for k in names])
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("name", FP16_KERNEL_NAMES)
def test_fp16_graph_parity_with_torch_fp16_and_fp32(name):
    """ORT runs the committed float16 graph (float32 in and out) close to its torch float16
    source, and close to the float32 graph: the precision loss is bounded, not a different
    algorithm."""
    assert kernels_torch.FP16_KERNELS == FP16_KERNEL_NAMES
    mod16, _, names, _, _ = kernels_torch.kernels_fp16()[name]
    feeds = _inputs(name, h=61, w=83, seed=2)
    ref16 = _torch_run(mod16, names, feeds)
    sess16 = ort.InferenceSession(str(graph_path(name, "fp16")), providers=["CPUExecutionProvider"])
    sess32 = ort.InferenceSession(str(graph_path(name, "fp32")), providers=["CPUExecutionProvider"])
    got16, got32 = sess16.run(None, feeds), sess32.run(None, feeds)
    assert [g.dtype for g in got16] == [np.float32] * len(got16)   # fp32 at the boundary
    for i, (r, g, f) in enumerate(zip(ref16, got16, got32)):
        assert r.shape == g.shape == f.shape
        if name == "match" and i == 0:
            # arg-min ties within float16's step may flip; sub-pixel offsets otherwise agree
            assert (np.abs(r - g).max(axis=1) < 1e-2).mean() > 0.98
            assert (np.abs(f - g).max(axis=1) < 1e-2).mean() > 0.98
        else:
            tol = 2e-2 if name == "features" else 2e-3
            np.testing.assert_allclose(g, r, atol=tol, err_msg=f"{name}[{i}] vs torch fp16")
            np.testing.assert_allclose(g, f, atol=tol, err_msg=f"{name}[{i}] vs fp32 graph")


def test_fp16_graphs_keep_coordinates_float32_and_are_small():
    """Float16 only where it is harmless: every GridSample (warping by pixel coordinates) takes
    a float32 grid and float32 image, every graph input/output is float32, and the float16
    graphs (committed files) stay small."""
    total = 0
    for name in FP16_KERNEL_NAMES:
        path = graph_path(name, "fp16")
        assert path.parent == ONNX_DIR and path.name == f"{name}_fp16.onnx"
        total += path.stat().st_size
        m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
        g = m.graph
        types = {v.name: v.type.tensor_type.elem_type
                 for v in list(g.value_info) + list(g.input) + list(g.output)}
        assert all(types[v.name] == onnx.TensorProto.FLOAT for v in list(g.input) + list(g.output))
        n16 = sum(types.get(o) == onnx.TensorProto.FLOAT16 for n in g.node for o in n.output)
        assert n16 > 5, f"{name}_fp16.onnx has (almost) no float16 tensors"
        for node in g.node:
            if node.op_type == "GridSample":
                assert [types[i] for i in node.input] == [onnx.TensorProto.FLOAT] * 2, name
    assert graph_path("lk", "fp16") == ONNX_DIR / "lk.onnx"     # no float16 variant
    assert total < 200_000, total


def test_resolve_precision():
    assert runtime.resolve_precision("auto", "cpu")[0] == "fp32"
    assert runtime.resolve_precision(None, "cpu")[0] == "fp32"
    assert runtime.resolve_precision("fp32", "cpu") == ("fp32", "precision float32 (requested)")
    prec, msg = runtime.resolve_precision("fp16", "cpu")
    assert prec == "fp32" and "running float32" in msg and "GPU-only" in msg
    assert runtime.resolve_precision("FP16", "torch-cpu")[0] == "fp32"
    if not runtime._cuda_works()[0]:
        assert runtime.resolve_precision("fp16", "auto")[0] == "fp32"
    else:  # pragma: no cover - GPU machine
        assert runtime.resolve_precision("fp16", "auto")[0] == "fp16"
    with pytest.raises(ValueError, match="fp32 or fp16"):
        runtime.resolve_precision("bf16", "cpu")
    with pytest.raises(ValueError):
        graph_path("match", "int8")


def test_kernels_fp16_run_the_fp16_graphs_close_to_fp32():
    """Kernels(precision="fp16") (onnxruntime and the torch backend) runs the float16 graphs;
    a coarse-to-fine flow stays within 0.05 px of float32 almost everywhere."""
    import cv2

    rng = np.random.default_rng(4)
    img = cv2.resize(rng.random((30, 40)).astype(np.float32), (160, 120),
                     interpolation=cv2.INTER_CUBIC)
    m = np.float32([[1, 0, 3.3], [0, 1, -2.6]])
    tgt = cv2.warpAffine(img, m, (160, 120), borderMode=cv2.BORDER_REFLECT)
    flows = {}
    for dev in ("cpu", "torch-cpu"):
        for prec in ("fp32", "fp16"):
            k = Kernels(dev, 1, precision=prec)
            f, _, _ = k.flow(k.pyramid(img, 3), k.pyramid(tgt, 3), final_iters=2)
            flows[dev, prec] = f[:, 10:-10, 10:-10]
    for dev in ("cpu", "torch-cpu"):
        d = np.abs(flows[dev, "fp16"] - flows[dev, "fp32"]).max(axis=0)
        assert np.median(d) < 0.01 and (d < 0.05).mean() > 0.95, (dev, np.median(d))
    # torch float16 is real float16 arithmetic: different from its float32, unlike ORT's
    assert not np.array_equal(flows["torch-cpu", "fp16"], flows["torch-cpu", "fp32"])
    med = np.median(flows["cpu", "fp16"].reshape(2, -1), axis=1)
    np.testing.assert_allclose(med, [3.3, -2.6], atol=0.1)


@pytest.fixture(scope="module")
def tiny_seq(tmp_path_factory):
    c = make_clip(112, 84, 8, seed=5, query_stride=6)
    return write_sequence(c, tmp_path_factory.mktemp("seq"))


def _track(pat, out, *extra, env=None):
    import os

    e = dict(os.environ)
    e.pop("WT_ORT_ARENA_MB", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "engine", "track", pat, "--out", str(out),
                           "--grid", "4", "--device", "cpu", "--progress", "lines", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env=e)


def test_cli_precision_flag_end_to_end(tiny_seq, tmp_path):
    """``--precision fp32`` is the default's result; ``--precision fp16`` on the CPU runs, says
    clearly that it fell back to float32 and why, and records the precision used; a bad value
    is refused by the parser."""
    runs = {}
    for prec in ("auto", "fp32", "fp16"):
        r = _track(tiny_seq, tmp_path / f"{prec}.npz", "--precision", prec)
        assert r.returncode == 0, r.stderr
        msgs = [x["message"] for x in map(parse_line, r.stderr.splitlines())
                if x and "message" in x]
        runs[prec] = load_trackfile(tmp_path / f"{prec}.npz"), msgs
    for prec, (d, _) in runs.items():
        assert d.metadata["engine"]["settings"]["precision"] == "fp32", prec
        np.testing.assert_array_equal(d.tracks_2d, runs["auto"][0].tracks_2d)
    assert any("float16 requested but running float32" in m and "GPU-only" in m
               for m in runs["fp16"][1]), runs["fp16"][1]
    r = _track(tiny_seq, tmp_path / "bad.npz", "--precision", "fp8")
    assert r.returncode == 2 and "--precision" in r.stderr and not (tmp_path / "bad.npz").exists()
