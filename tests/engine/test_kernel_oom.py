"""Kernels out of memory: recognised, retried in halving row bands, else one clear error.

Real allocation failures, no mocks: ``WT_ORT_ARENA_MB`` caps ONNX Runtime's arena (a real
capped BFC arena, the allocator ORT also uses on CUDA), so a kernel call that needs more really
fails inside onnxruntime with its own exception type. The cap is process-wide and fixed once
set, so each capped case runs in its own process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
ort = pytest.importorskip("onnxruntime")

from engine.match import ops  # noqa: E402
from engine.match.ops import KERNEL_NAMES, Kernels, is_out_of_memory  # noqa: E402
from engine.trackfile import load_trackfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from track_synth import make_clip, write_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _env(cap_mb: int | None) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("WT_ORT_ARENA_MB", None)
    if cap_mb is not None:
        e["WT_ORT_ARENA_MB"] = str(cap_mb)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


def _calls(k: Kernels, h: int = 97, w: int = 64):
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 1.5)
    feat = k.features(img)
    tgt = np.roll(feat, (2, -1), axis=(1, 2))
    flow = (rng.standard_normal((2, h, w)) * 1.5).astype(np.float32)
    grid = np.stack(np.meshgrid(np.arange(w), np.arange(h))).astype(np.float32)
    return {"features": lambda: [k.features(img)],
            "match": lambda: list(k.match(feat, tgt, flow)),
            "score": lambda: list(k.score(feat, np.roll(feat, 1, 2), tgt, flow)),
            "lk": lambda: [k.lk(img, np.roll(img, 1, 1), flow)],
            "warp": lambda: list(k.warp(feat, grid + flow))}


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_bands_give_the_same_result_as_one_call(name):
    """Each kernel on row bands (8 and 13 rows, with its halo) equals one whole-image call:
    exactly for features / warp, to float rounding of the band-shifted flows otherwise. (The
    halos matter: measured, a halo below a kernel's footprint changes results by > 0.1.)"""
    k = Kernels("cpu", 1)
    call = _calls(k)[name]
    whole = call()
    for rows in (8, 13):
        k.band_rows[name] = rows
        banded = call()
        for a, b in zip(whole, banded):
            assert a.shape == b.shape and a.dtype == b.dtype
            if name in ("features", "warp"):
                np.testing.assert_array_equal(a, b)
            else:
                np.testing.assert_allclose(b, a, atol=1e-4, rtol=0)


def test_out_of_memory_is_recognised_and_other_errors_are_not():
    """Real onnxruntime failures: a capped arena's allocation failure is OOM (with onnxruntime's
    own exception type, not RuntimeError); a shape error is not and is raised, not retried."""
    script = (
        "import numpy as np, onnxruntime as ort\n"
        "from engine.runtime import get_session\n"
        "from engine.match.ops import ONNX_DIR, is_out_of_memory\n"
        "s = get_session(ONNX_DIR / 'match.onnx', 'cpu', 1)\n"
        "z = lambda c, h: np.zeros((1, c, h, 320), np.float32)\n"
        "try:\n"
        "    s.run(None, {'ref': z(8, 240), 'tgt': z(8, 240), 'flow': z(2, 240)})\n"
        "    print('NO-ERROR')\n"
        "except Exception as e:\n"
        "    print(type(e).__module__, type(e).__name__, isinstance(e, RuntimeError),"
        " is_out_of_memory(e))\n")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(4),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    mod, typ, is_rt, oom = r.stdout.split()
    assert mod.startswith("onnxruntime") and oom == "True", r.stdout
    k = Kernels("cpu", 1)
    bad = np.zeros((8, 10, 10), np.float32)
    with pytest.raises(Exception) as ei:
        k.match(bad, bad, np.zeros((3, 10, 10), np.float32))     # 3-channel flow: invalid
    assert not is_out_of_memory(ei.value) and "match" not in k.band_rows
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(ValueError("shape"))


def test_capped_arena_retries_in_bands_then_fails_clearly():
    """Under a 16 MiB arena a 320x240 match fails whole, succeeds in halved bands with the
    uncapped result, and the band height is kept for the next call; a frame whose target alone
    exceeds the cap fails even in 8-row bands with KernelMemoryError, one line naming what to
    lower."""
    script = r'''
import json, os, numpy as np
from engine.match.ops import Kernels, KernelMemoryError
rng = np.random.default_rng(0)
h, w = 240, 320
ref = rng.standard_normal((8, h, w)).astype(np.float32)
tgt = np.roll(ref, (2, -3), (1, 2))
flow = np.zeros((2, h, w), np.float32)
cap = os.environ.pop("WT_ORT_ARENA_MB")
free = Kernels("cpu", 1).match(ref, tgt, flow)
os.environ["WT_ORT_ARENA_MB"] = cap
msgs = []
k = Kernels("cpu", 1, notify=msgs.append)
got = k.match(ref, tgt, flow)
rows = dict(k.band_rows)
again = k.match(ref, tgt, flow)
diff = max(float(np.abs(a - b).max()) for a, b in zip(free, got))
same = all(np.array_equal(a, b) for a, b in zip(got, again))
big = rng.standard_normal((8, 1000, 1500)).astype(np.float32)
try:
    k.match(big, big, np.zeros((2, 1000, 1500), np.float32))
    err = ""
except KernelMemoryError as e:
    err = str(e)
print(json.dumps({"rows": rows, "msgs": msgs, "diff": diff, "same": same, "err": err}))
'''
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=_env(16),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert ops.MIN_BAND_ROWS <= out["rows"]["match"] < 240, out
    assert out["msgs"] and "retrying in bands" in out["msgs"][0]
    assert out["diff"] < 1e-3 and out["same"], out
    err = out["err"]
    assert err and "\n" not in err and "bands of 8 rows" in err, err
    for hint in ("--max-side", "--grid", "--precision", "--memory-limit"):
        assert hint in err


@pytest.fixture(scope="module")
def tiny_seq(tmp_path_factory):
    c = make_clip(112, 84, 8, seed=5, query_stride=6)
    return write_sequence(c, tmp_path_factory.mktemp("seq"))


def _track(pat, out, cap_mb):
    return subprocess.run([sys.executable, "-m", "engine", "track", pat, "--out", str(out),
                           "--grid", "4", "--device", "cpu", "--progress", "lines"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=_env(cap_mb))


def test_cli_recovers_from_out_of_memory_or_stops_cleanly(tiny_seq, tmp_path):
    """``engine track`` under a 3 MiB arena retries the kernels that run out in bands and writes
    (nearly) the tracks of an uncapped run; under 1 MiB it exits 2 with one 'error:' line
    naming --max-side/--grid/--precision/--memory-limit and leaves no file or scratch behind."""
    ref = _track(tiny_seq, tmp_path / "free.npz", None)
    assert ref.returncode == 0, ref.stderr
    r = _track(tiny_seq, tmp_path / "capped.npz", 3)
    assert r.returncode == 0, r.stderr
    assert "retrying in bands" in r.stderr
    a, b = load_trackfile(tmp_path / "free.npz"), load_trackfile(tmp_path / "capped.npz")
    d = np.linalg.norm(a.tracks_2d - b.tracks_2d, axis=-1)
    # float rounding of band-shifted flows can flip a rare arg-min tie, nothing more
    assert np.median(d) < 1e-4 and np.quantile(d, 0.99) < 0.01 and d.max() < 0.5, d.max()
    assert (a.visible == b.visible).mean() > 0.995
    out = tmp_path / "fail.npz"
    r = _track(tiny_seq, out, 1)
    assert r.returncode == 2, r.stderr
    errs = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(errs) == 1 and "out of memory" in errs[0], r.stderr
    for hint in ("--max-side", "--grid", "--precision", "--memory-limit"):
        assert hint in errs[0]
    assert "Traceback" not in r.stderr
    assert not out.exists() and not list(tmp_path.glob(".wt-*"))
