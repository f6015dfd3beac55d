"""Threaded loops (engine.parallel) give the serial results; the interleaved-channel sampler gives
exactly the per-channel samples."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine.parallel import loop_workers, ordered_map  # noqa: E402
from test_refine_occlusion import scene  # noqa: E402,F401  (the board-and-wall scene fixture)


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_ordered_map_keeps_order_and_runs_at_most_workers_ahead(workers):
    consumed, running, most = [], [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(20):
            consumed.append(i)
            yield (i,)

    def fn(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002 * (i % 3))       # later items may finish first
        with lock:
            running[0] -= 1
        return i * i

    out = []
    for r in ordered_map(fn, items(), workers):
        out.append(r)
        # never more than `workers` items taken beyond the results handed back
        assert len(consumed) - len(out) <= workers
    assert out == [i * i for i in range(20)]
    assert most[0] <= workers


def test_ordered_map_raises_a_call_error_and_a_cancel():
    def fn(i):
        if i == 5:
            raise ValueError("bad item")
        return i

    with pytest.raises(ValueError, match="bad item"):
        list(ordered_map(fn, ((i,) for i in range(10)), 3))

    class Stop(Exception):
        pass

    seen = []

    def check():
        if len(seen) >= 4:
            raise Stop

    def items():
        for i in range(100):
            seen.append(i)
            yield (i,)

    with pytest.raises(Stop):
        list(ordered_map(lambda i: i, items(), 2, check))
    assert len(seen) == 4          # nothing taken after the cancel


def test_loop_workers_follows_wt_threads_and_a_memory_limit(monkeypatch):
    from engine.track.memory import MemoryBudget

    monkeypatch.setenv("WT_THREADS", "3")
    assert loop_workers() == 3
    assert loop_workers(MemoryBudget(None)) == 3
    assert loop_workers(MemoryBudget(512)) == 1       # chunks are budgeted for one thread
    import engine.track.memory as memory

    monkeypatch.setattr(memory, "_PROCESS_LIMIT_MB", 512)   # `--memory-limit 512`
    assert loop_workers() == 1 and loop_workers(MemoryBudget(None)) == 3
    monkeypatch.setattr(memory, "_PROCESS_LIMIT_MB", None)
    monkeypatch.setenv("WT_THREADS", "1")
    assert loop_workers() == 1


@pytest.mark.parametrize("channels", [1, 3, 8])
def test_sample_points_equals_one_remap_per_channel(channels):
    import cv2

    from engine.match.ops import sample_points

    rng = np.random.default_rng(channels)
    planes = rng.standard_normal((channels, 37, 53)).astype(np.float32)
    xy = (rng.random((3000, 2)) * [61, 45] - 4).astype(np.float32)   # some off the image
    xy[::17] = np.nan
    m = len(xy)
    mx = np.zeros((3, 1024), np.float32)
    my = np.zeros((3, 1024), np.float32)
    mx.reshape(-1)[:m], my.reshape(-1)[:m] = xy[:, 0], xy[:, 1]
    ref = np.stack([cv2.remap(planes[c], mx, my, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE).reshape(-1)[:m]
                    for c in range(channels)], 1)
    got = sample_points(planes, xy)
    assert got.shape == (m, channels)
    np.testing.assert_array_equal(got, ref)
    # the same from channel-interleaved memory (how the refine stage keeps descriptors)
    inter = np.moveaxis(np.ascontiguousarray(np.moveaxis(planes, 0, -1)), -1, 0)
    np.testing.assert_array_equal(sample_points(inter, xy), ref)
    # sub-pixel positions inside the image agree with plain bilinear interpolation to within
    # OpenCV's 1/32 px position grid
    inside = np.isfinite(xy).all(1) & (xy[:, 0] >= 0) & (xy[:, 0] <= 51) & (xy[:, 1] >= 0) \
        & (xy[:, 1] <= 35)
    x, y = xy[inside, 0], xy[inside, 1]
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    bil = (planes[:, y0, x0] * (1 - fx) * (1 - fy) + planes[:, y0, x0 + 1] * fx * (1 - fy)
           + planes[:, y0 + 1, x0] * (1 - fx) * fy + planes[:, y0 + 1, x0 + 1] * fx * fy).T
    grad = np.abs(np.diff(planes, axis=2)).max() + np.abs(np.diff(planes, axis=1)).max()
    assert np.abs(got[inside] - bil).max() <= grad / 32


def test_sweep_costs_in_threads_equal_the_serial_costs(tmp_path, monkeypatch):
    from track_synth import make_clip, write_sequence

    from engine.decode import open_footage
    from engine.refine.appearance import DescriptorCache, sweep_costs

    clip = make_clip(160, 120, n_frames=10, seed=3, square=30, sq_speed=4.0, query_stride=10,
                     noise=0.01)
    fo = open_footage(write_sequence(clip, tmp_path / "seq"))
    q = clip.query.astype(np.float32)
    rng = np.random.default_rng(0)
    uv = (clip.tracks[:, None] + rng.normal(0, 3, (len(q), 5, 1, 2))).astype(np.float64)
    uv[rng.random(uv.shape[:3]) < 0.05] = np.nan
    uv[:, 0, 3] = [-20.0, 50.0]                      # out of frame: NaN cost
    descs = DescriptorCache(fo, max_bytes=1 << 30)
    serial = sweep_costs(fo, q, uv, descs=descs)
    for workers in (2, 3):
        np.testing.assert_array_equal(sweep_costs(fo, q, uv, descs=descs, workers=workers),
                                      serial)
    # the references broadcast instead of repeated over the candidates: the same costs
    import engine.refine.appearance as app
    monkeypatch.setattr(app, "_TILED_REF_BYTES", 0)
    np.testing.assert_array_equal(sweep_costs(fo, q, uv, descs=descs), serial)
    inside = np.isfinite(uv).all(-1) & (uv[..., 0] > -0.5) & (uv[..., 0] < 159.5) \
        & (uv[..., 1] > -0.5) & (uv[..., 1] < 119.5)
    np.testing.assert_array_equal(np.isfinite(serial), inside)   # a cost exactly where in frame
    assert np.isnan(serial[:, 0, 3]).all() and inside.mean() > 0.5


def _same(a, b, what=""):
    """Decisions (ints, bools) exactly; floats up to the last bits of a matrix product, which
    numpy's BLAS may split differently when two threads call it at once."""
    if np.issubdtype(a.dtype, np.floating):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b), err_msg=what)
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(a, b, err_msg=what)


def test_lift_in_threads_equals_the_serial_lift(monkeypatch):
    """Static chunks, rigid-group assignment and non-rigid paths of a scene with a moving box,
    in 1 and in 3 threads: the same arrays and the same report."""
    from solve_synth import make_scene
    from test_lift import _lift

    sc = make_scene("dynamic", T=16, n_points=700, W=320, H=240, seed=5)
    runs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("WT_THREADS", threads)
        runs.append(_lift(sc, chunk=128))
    (a3, ag, ar, ainfo), (b3, bg, br, binfo) = runs
    _same(a3, b3)
    _same(ag, bg)
    _same(ar, br)
    ainfo.pop("seconds"), binfo.pop("seconds")
    assert ainfo == binfo and ainfo["groups"] and ainfo["n_dynamic_tracks"] > 0


def test_refine_in_threads_equals_the_serial_refine(tmp_path, monkeypatch):
    """The refinement with the footage (static fits, appearance visibility, depth sweep of lost
    tracks) in 1 and in 3 threads: the same outputs."""
    from test_refine import lost_tracks_case, refine_outputs

    from engine.decode import open_footage
    from engine.refine.tracks import refine_tracks

    path, args = lost_tracks_case(tmp_path, seed=1)
    N, T = args[1].shape
    outs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("WT_THREADS", threads)
        out = refine_outputs(N, T)
        res = refine_tracks(*args, out["xy"], out["v"], out["c"], out["x3"], out["g"], out["e"],
                            footage=open_footage(path), chunk=64)
        outs.append((out, res))
    (a, ra), (b, rb) = outs
    for k in a:
        _same(a[k], b[k], k)
    np.testing.assert_array_equal(ra.kind, rb.kind)
    assert (ra.kind == 3).sum() > 0           # the sweep ran


def test_sweep_chunks_in_threads_equal_the_serial_sweep(tmp_path, monkeypatch):
    """With every frame's descriptors held, the depth sweep runs its chunks of tracks in
    threads (each frame of a chunk compared in that chunk's thread): the same outputs and
    counts as one chunk at a time with its frames in threads, and as one thread."""
    from test_refine import lost_tracks_case, refine_outputs

    import engine.refine.tracks as rt
    from engine.decode import open_footage

    path, args = lost_tracks_case(tmp_path, seed=4)
    N, T = args[1].shape
    monkeypatch.setattr(rt, "SWEEP_CHUNK_ELEMENTS", 48 * T * 16)     # chunks of 16 tracks
    calls = []
    real_map = rt.ordered_map

    def spy(fn, items, workers, check_cancel=None):
        calls.append((fn.__name__, workers))
        return real_map(fn, items, workers, check_cancel)

    monkeypatch.setattr(rt, "ordered_map", spy)
    outs = []
    for threads, cache_mb in (("1", 256), ("3", 256), ("3", 0)):
        monkeypatch.setenv("WT_THREADS", threads)
        monkeypatch.setattr(rt, "DESCRIPTOR_CACHE_MB", cache_mb)
        calls.clear()
        out = refine_outputs(N, T)
        res = rt.refine_tracks(*args, out["xy"], out["v"], out["c"], out["x3"], out["g"],
                               out["e"], footage=open_footage(path), chunk=64)
        outs.append((out, res, [w for name, w in calls if name == "chunk"]))
    (a, ra, wa), (b, rb, wb), (c, rc, wc) = outs
    assert wa == [1] and wb == [3] and wc == [1]     # threads over chunks only when all held
    assert (ra.kind == 3).sum() > 16                 # several chunks were swept
    for other, ro in ((b, rb), (c, rc)):
        for k in a:
            _same(a[k], other[k], k)
        np.testing.assert_array_equal(ra.kind, ro.kind)
        for key in ("n_static_by_appearance", "n_ambiguous_depth", "n_sweep_window_settled"):
            assert ra.report[key] == ro.report[key], key


def test_occlusion_check_in_threads_equals_the_serial_check(scene, monkeypatch):
    """The geometric occlusion test (frames in threads, counts gathered in frame order) hides the
    same point-frames with the same report as in one thread."""
    import test_refine_occlusion as occ

    sc = scene
    outs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("WT_THREADS", threads)
        res, out = occ._refine(sc, occlusion=True)
        outs.append((res.report["occlusion_check"], res.report["n_occluded_by_geometry"], out))
    (ra, na, a), (rb, nb, b) = outs
    assert ra == rb and na == nb > 100
    for k in a:
        _same(a[k], b[k], k)


def test_plain_region_fits_in_threads_equal_the_serial_fits(tmp_path, monkeypatch):
    """The plain-region fits (fronto-parallel scores and Powell starts in threads, results
    gathered in order) choose the same planes as in one thread: the same depths, bit for bit."""
    from test_refine_regions import _depth, _wall_clip

    from engine.decode import open_footage
    from engine.refine.regions import plain_region_depths

    path, c2w, K, q_wall, X_wall, q_floor, X_floor = _wall_clip(tmp_path)
    true = _depth(X_wall, c2w)
    drift = c2w[0, :3, 3] + (X_wall - c2w[0, :3, 3]) * np.exp(
        np.random.default_rng(2).uniform(-0.35, 0.35, len(true)))[:, None]
    runs = []
    for threads in ("1", "3"):
        monkeypatch.setenv("WT_THREADS", threads)
        runs.append(plain_region_depths(open_footage(path), q_wall, c2w, K,
                                        lambda t: np.concatenate([drift, X_floor]),
                                        (0.3 * true.min(), 3.0 * true.max())))
    (da, ra), (db, rb) = runs
    np.testing.assert_array_equal(da, db)
    assert ra == rb and np.isfinite(da).mean() > 0.9


def test_single_threaded_blas_keeps_a_count_the_environment_names():
    from engine.parallel import BLAS_THREAD_VARS, blas_threads, single_threaded_blas

    env: dict[str, str] = {}
    assert blas_threads(env) == "default"
    single_threaded_blas(env)
    assert env == dict.fromkeys(BLAS_THREAD_VARS, "1") and blas_threads(env) == "1"
    env = {"OPENBLAS_NUM_THREADS": "4"}
    single_threaded_blas(env)
    assert env["OPENBLAS_NUM_THREADS"] == "4" and blas_threads(env) == "4"
