"""engine.track: accuracy against exact ground truth and chained DIS, API/CLI contract, bad input.

The synthetic clips (tests/engine/track_synth.py) have a camera homography and an occluding,
moving square, so occlusion handling and re-finding matter. Kept small to run in seconds.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

from engine.progress import Cancelled, Progress, parse_line  # noqa: E402
from engine.track import TrackError, track_clip  # noqa: E402
from engine.trackfile import load_trackfile  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from track_synth import dis_baseline, make_clip, score, write_sequence  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def clip_and_seq(tmp_path_factory):
    c = make_clip(112, 84, 14, seed=5, query_stride=6)
    pat = write_sequence(c, tmp_path_factory.mktemp("seq"))
    return c, pat


@pytest.fixture(scope="module")
def tracked(clip_and_seq, tmp_path_factory):
    c, pat = clip_and_seq
    out = tmp_path_factory.mktemp("out") / "tracks.npz"
    track_clip(pat, out, queries=c.query, device="cpu", progress=Progress("quiet"))
    return load_trackfile(out)


def test_beats_chained_dis_by_15_aj_points(clip_and_seq, tracked):
    c, _ = clip_and_seq
    ours = score(c.query, c, tracked.tracks_2d, tracked.visible)
    bt, bv = dis_baseline(c, c.query)
    dis = score(c.query, c, bt, bv)
    assert ours["AJ"] >= dis["AJ"] + 0.15, (ours, dis)
    assert ours["OA"] >= 0.85, ours
    assert ours["delta_avg"] >= 0.80, ours


def test_track_file_contract(clip_and_seq, tracked):
    c, _ = clip_and_seq
    d = tracked
    assert d.tracks_2d.shape == (len(c.query), 14, 2)
    np.testing.assert_allclose(d.tracks_2d[:, 0], c.query[:, 1:], atol=1e-4)  # query frame exact
    assert d.visible[:, 0].all()
    assert np.isnan(d.tracks_3d).all()
    np.testing.assert_allclose(d.cam_to_world, np.tile(np.eye(4), (14, 1, 1)))
    assert np.allclose(d.K[:, 0, 0], 1.2 * 112) and np.allclose(d.K[:, :2, 2], [55.5, 41.5])
    assert ((d.confidence >= 0) & (d.confidence <= 1)).all()
    # hidden points get lower confidence than visible ones
    assert d.confidence[~d.visible].mean() < d.confidence[d.visible].mean()
    assert d.colors is not None and d.colors.shape == (len(c.query), 3)


def test_queries_on_many_frames_share_anchor_passes(clip_and_seq, tmp_path):
    c, pat = clip_and_seq
    rng = np.random.default_rng(1)
    q = c.query.copy()
    for i in range(0, len(q), 2):  # half the queries re-issued on a later frame where visible
        t = rng.choice(np.nonzero(c.visible[i])[0])
        q[i] = [t, *c.tracks[i, t]]
    out = track_clip(pat, tmp_path / "m.npz", queries=q, device="cpu", progress=Progress("quiet"))
    d = load_trackfile(out)
    anchors = d.metadata["engine"]["settings"]["anchors"]
    assert len(anchors) < len(np.unique(q[:, 0]))       # fewer passes than query frames
    ours = score(q, c, d.tracks_2d, d.visible)
    bt, bv = dis_baseline(c, q)
    assert ours["AJ"] >= score(q, c, bt, bv)["AJ"] + 0.10, ours
    rows = np.arange(len(q))
    np.testing.assert_allclose(d.tracks_2d[rows, q[:, 0].astype(int)], q[:, 1:], atol=1e-4)


def test_predict_hook_moves_hidden_points(clip_and_seq, tmp_path):
    """The solver feedback hook: a perfect predictor makes hidden points more accurate."""
    c, pat = clip_and_seq
    calls = []
    gt = c.tracks
    q0 = c.query[:, 1:]

    def predict(t_from, t_to, xy):
        calls.append(len(xy))
        # look up each point's ground truth by its nearest ground-truth track at t_from
        d = np.linalg.norm(gt[None, :, t_from] - xy[:, None], axis=-1)
        j = d.argmin(axis=1)
        out = gt[j, t_to].copy()
        out[d.min(axis=1) > 3] = np.nan
        return out

    a = load_trackfile(track_clip(pat, tmp_path / "a.npz", queries=c.query, device="cpu",
                                  predict=predict, progress=Progress("quiet")))
    assert calls, "predict was never called"
    hidden = ~c.visible
    inside = ((gt[..., 0] >= 0) & (gt[..., 0] < 112) & (gt[..., 1] >= 0) & (gt[..., 1] < 84))
    sel = hidden & inside
    err_hint = np.nanmedian(np.linalg.norm(a.tracks_2d - gt, axis=-1)[sel])
    assert err_hint < 1.5, err_hint
    assert q0.shape[1] == 2


def test_cli_grid_progress_lines_and_frame_range(clip_and_seq, tmp_path):
    _, pat = clip_and_seq
    out = tmp_path / "cli.npz"
    r = subprocess.run([sys.executable, "-m", "engine", "track", pat, "--out", str(out),
                        "--grid", "16", "--frames", "2:9", "--device", "cpu",
                        "--progress", "lines"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [parse_line(x) for x in r.stderr.splitlines()]
    recs = [x for x in lines if x and "stage" in x]
    assert any(x["stage"] == "track" and x["fraction"] == 1.0 for x in recs)
    d = load_trackfile(out)
    assert d.n_frames == 8 and d.metadata["frame_range"] == [2, 9]
    assert d.n_tracks == len(range(0, 112, 16)) * len(range(0, 84, 16))


def test_dense_default_adds_tracks_where_new_surface_appears(tmp_path):
    c = make_clip(48, 36, 6, seed=2, square=12, sq_speed=1.5)
    pat = write_sequence(c, tmp_path / "seq")
    d = load_trackfile(track_clip(pat, tmp_path / "dense.npz", device="cpu",
                                  progress=Progress("quiet")))
    assert d.n_tracks >= 48 * 36
    first = d.query[:48 * 36]
    assert (first[:, 0] == 0).all()
    later = d.query[48 * 36:]
    assert len(later) == 0 or (later[:, 0] > 0).all()


def test_cancel_leaves_no_file(clip_and_seq, tmp_path):
    _, pat = clip_and_seq
    out = tmp_path / "cancel.npz"
    prog = Progress("quiet", min_interval_s=0.0)

    def cb(stage, done, total, eta):
        if stage == "track" and done >= 3:
            prog.cancel()

    prog.callback = cb
    with pytest.raises(Cancelled):
        track_clip(pat, out, grid=8, device="cpu", progress=prog)
    assert not out.exists()
    assert not list(tmp_path.glob("*.partial")) and not list(tmp_path.glob(".wt-*"))


@pytest.mark.parametrize("bad,match", [
    (np.array([[0, np.nan, 3.0]]), "NaN"),
    (np.array([[0, 500.0, 3.0]]), "outside"),
    (np.array([[99, 5.0, 3.0]]), "frame index"),
    (np.zeros((3, 2)), "shape"),
])
def test_bad_queries(clip_and_seq, tmp_path, bad, match):
    _, pat = clip_and_seq
    with pytest.raises(TrackError, match=match):
        track_clip(pat, tmp_path / "x.npz", queries=bad, device="cpu", progress=Progress("quiet"))
    assert not (tmp_path / "x.npz").exists()


def test_one_frame_is_a_clear_error(clip_and_seq, tmp_path):
    _, pat = clip_and_seq
    with pytest.raises(TrackError, match="at least 2"):
        track_clip(pat, tmp_path / "x.npz", frames=(3, 3), device="cpu")


def test_cli_bad_input_exit_code(tmp_path):
    r = subprocess.run([sys.executable, "-m", "engine", "track", str(tmp_path / "none.mp4"),
                        "--out", str(tmp_path / "o.npz")], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr


def test_uniform_clip_gives_low_confidence(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    for i in range(4):
        cv2.imwrite(str(folder / f"f_{i:02d}.png"), np.full((24, 32, 3), 128, np.uint8))
    d = load_trackfile(track_clip(folder, tmp_path / "flat.npz", grid=4, device="cpu",
                                  progress=Progress("quiet")))
    assert np.isfinite(d.tracks_2d).all()
    assert d.confidence[:, 1:].max() < 0.05


def _interrupt_midway(pat: str, out, sig) -> subprocess.Popen:
    """Run ``engine track`` on ``pat`` and send it ``sig`` once tracking is under way. SIGINT is
    restored to its default in the child first: a shell starts background jobs (e.g. a CI
    runner's) with SIGINT ignored, and Python then keeps ignoring it -- as a terminal's Ctrl-C
    is meant to reach only the foreground job."""
    import signal
    import time

    p = subprocess.Popen([sys.executable, "-m", "engine", "track", pat, "--out", str(out),
                          "--device", "cpu", "--progress", "lines"], cwd=ROOT,
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    for line in p.stderr:
        rec = parse_line(line)
        if rec and rec.get("stage") == "track" and rec.get("done", 0) >= 2:
            p.send_signal(sig)
            break
        assert time.monotonic() - t0 < 120
    p.communicate(timeout=120)
    return p


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_ctrl_c_exits_130_without_output(clip_and_seq, tmp_path, signame):
    """Ctrl-C (SIGINT) or a polite kill (SIGTERM, as Blender's Cancel sends): exit 130, no
    track file, no partial or work files."""
    import signal

    _, pat = clip_and_seq
    out = tmp_path / "int.npz"
    p = _interrupt_midway(pat, out, getattr(signal, signame))
    assert p.returncode == 130
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
    assert not list(tmp_path.glob(".wt-*"))


def test_dis_pair_flow_option(clip_and_seq, tmp_path):
    """The OpenCV-DIS initialisation (for very noisy footage) also runs and beats chained DIS."""
    c, pat = clip_and_seq
    d = load_trackfile(track_clip(pat, tmp_path / "d.npz", queries=c.query, device="cpu",
                                  pair_flow="dis", switch_ratio=0.5, progress=Progress("quiet")))
    assert d.metadata["engine"]["settings"]["pair_flow"] == "dis"
    ours = score(c.query, c, d.tracks_2d, d.visible)
    bt, bv = dis_baseline(c, c.query)
    assert ours["AJ"] > score(c.query, c, bt, bv)["AJ"], ours
    with pytest.raises(TrackError, match="pair_flow"):
        track_clip(pat, tmp_path / "e.npz", pair_flow="raft", device="cpu")


def test_linear_exr_clip_with_colorspace_linear_tracks_a_known_shift(tmp_path):
    """A scene-linear float EXR sequence (the view slides 2 px right, 1 px down per frame):
    with colorspace="linear" the decoder applies the sRGB curve and the tracker follows the
    content exactly."""
    import os

    from engine.decode import srgb_eotf
    from track_synth import texture

    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    w, h, T, dx, dy = 64, 48, 6, 2, 1
    big = texture(h + T * dy + 8, w + T * dx + 8, seed=11)
    folder = tmp_path / "exr"
    folder.mkdir()
    for t in range(T):
        view = big[4 + t * dy:4 + t * dy + h, 4 + t * dx:4 + t * dx + w]
        lin = srgb_eotf(view / 255.0)[..., ::-1]
        if not cv2.imwrite(str(folder / f"lin_{t:03d}.exr"), np.ascontiguousarray(lin)):
            pytest.skip("this OpenCV build cannot write EXR")
    out = track_clip(folder / "lin_###.exr", tmp_path / "lin.npz", grid=6, device="cpu",
                     colorspace="linear", progress=Progress("quiet"))
    d = load_trackfile(out)
    assert d.metadata["engine"]["settings"]["colorspace"] == "linear"
    t = np.arange(T)
    want = d.query[:, None, 1:] - np.stack([dx * t, dy * t], 1)[None].astype(np.float32)
    inside = ((want[..., 0] >= 3) & (want[..., 0] <= w - 4) & (want[..., 1] >= 3)
              & (want[..., 1] <= h - 4))
    err = np.linalg.norm(d.tracks_2d - want, axis=-1)[inside]
    assert inside.sum() > 200
    assert np.median(err) < 0.25 and np.mean(err < 1.0) > 0.95, (np.median(err), np.mean(err < 1))
    assert d.visible[inside].mean() > 0.95


def test_memory_limit_gives_identical_tracks_in_smaller_blocks(clip_and_seq, tmp_path,
                                                                monkeypatch):
    """The smallest limit the working resolution allows: output in several chunks of tracks and
    blocks of frames, arena-less ONNX sessions, pages released -- the track file is identical
    to the one without a limit (so the limit need not be part of any cache key)."""
    import engine.track.api as api
    from engine.track.memory import track_minimum_mb

    _, pat = clip_and_seq
    rows, kernels = [], []
    real_row_chunk, real_make = api._row_chunk, api.make_kernels
    monkeypatch.setattr(api, "_row_chunk", lambda n, t, b: rows.append(
        (n, real_row_chunk(n, t, b))) or rows[-1][1])
    monkeypatch.setattr(api, "make_kernels", lambda *a: kernels.append(real_make(*a))
                        or kernels[-1])
    free = load_trackfile(track_clip(pat, tmp_path / "free.npz", device="cpu",
                                     progress=Progress("quiet")))
    n_free = len(rows)
    least = track_minimum_mb((112, 84))
    tight = load_trackfile(track_clip(pat, tmp_path / "tight.npz", device="cpu",
                                      memory_limit_mb=least, progress=Progress("quiet")))
    assert kernels[0].arena and not kernels[1].arena
    assert all(r == n for n, r in rows[:n_free])
    assert any(r < n for n, r in rows[n_free:])   # the limited run wrote in several chunks
    assert tight.n_tracks == free.n_tracks > 112 * 84
    for name, a in free.arrays().items():
        assert np.array_equal(np.asarray(a), np.asarray(tight.arrays()[name]), equal_nan=True), name


def test_memory_limit_too_small_fails_early_with_what_it_needs(clip_and_seq, tmp_path):
    from engine.track.memory import MemoryLimitError, track_minimum_mb

    _, pat = clip_and_seq
    need = track_minimum_mb((112, 84))
    with pytest.raises(MemoryLimitError, match=f"needs at least {need} MiB.*Working Resolution"):
        track_clip(pat, tmp_path / "x.npz", device="cpu", memory_limit_mb=need - 1)
    assert not (tmp_path / "x.npz").exists() and not list(tmp_path.glob(".wt-*"))
    r = subprocess.run([sys.executable, "-m", "engine", "track", pat, "--out",
                        str(tmp_path / "y.npz"), "--memory-limit", "64", "--max-side", "112"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs at least" in r.stderr
    assert "raise the memory limit" in r.stderr
    r = subprocess.run([sys.executable, "-m", "engine", "track", pat, "--out",
                        str(tmp_path / "y.npz"), "--memory-limit", "0"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "positive" in r.stderr


def test_make_kernels_drops_the_onnx_arena_only_with_a_limit():
    """With a limit the kernels' sessions run without ONNX Runtime's CPU arena (through the
    public ``arena`` switch of Kernels / get_session), without one they are the shared pooled
    sessions; the page helper is the one engine.trackfile uses too."""
    import engine.pages
    import engine.track.memory as mem
    from engine.match.ops import KERNEL_NAMES, Kernels

    free = mem.make_kernels("cpu", 1, mem.MemoryBudget())
    lean = mem.make_kernels("cpu", 1, mem.MemoryBudget(512))
    assert type(free) is Kernels and free.arena
    assert type(lean) is Kernels and not lean.arena
    for n in KERNEL_NAMES:
        assert free._s[n].get_session_options().enable_cpu_mem_arena
        assert not lean._s[n].get_session_options().enable_cpu_mem_arena
    assert mem.release_pages is engine.pages.release_pages


def test_long_clip_is_covered_by_overlapping_windows(tmp_path):
    """Dense tracking of a pan whose content is replaced every ~35 frames: each anchor pass stops
    once its points are gone (a temporal window), later passes start where surface is new, and
    together they cover every frame; tracks from later windows follow the exact pan."""
    from benchmarks.longclip import PanSettings, render

    st = PanSettings(frames=120, size=(48, 36), queries_every=40)
    clip = render(st, tmp_path / "pan")
    d = load_trackfile(track_clip(str(clip / "frames"), tmp_path / "dense.npz", device="cpu",
                                  progress=Progress("quiet")))
    windows = d.metadata["engine"]["settings"]["anchor_windows"]
    assert len(windows) >= 3
    assert min(b - a for a, b in windows) < st.frames          # passes stop: windows, not clip
    covered = np.zeros(st.frames, bool)
    for a, b in windows:
        covered[a:b] = True
    assert covered.all()
    w, h = st.size
    vis, xy = np.asarray(d.visible), np.asarray(d.tracks_2d)
    for t in range(st.frames):                                  # every frame has live tracks
        m = np.zeros((h, w), np.uint8)
        p = np.round(xy[vis[:, t], t]).astype(int)
        ok = (p[:, 0] >= 0) & (p[:, 0] < w) & (p[:, 1] >= 0) & (p[:, 1] < h)
        m[p[ok, 1], p[ok, 0]] = 1
        assert (cv2.dilate(m, np.ones((3, 3), np.uint8)) > 0).mean() >= 0.75, t
    # tracks started on later frames, on the background (away from the occluder): exact pan
    off, occ = st.offsets(), st.occluder()
    q = np.asarray(d.query)
    tq = q[:, 0].astype(int)
    x0, y0, x1, y1 = occ[tq].T
    bg = (tq > 0) & ~((q[:, 1] > x0 - 3) & (q[:, 1] < x1 + 3) & (q[:, 2] > y0 - 3) & (q[:, 2] < y1 + 3))
    truth = q[bg, None, 1:3] + off[tq[bg]][:, None] - off[None]
    inside = ((truth[..., 0] >= 0) & (truth[..., 0] <= w - 1) & (truth[..., 1] >= 0)
              & (truth[..., 1] <= h - 1))
    seen = vis[bg] & inside & (np.arange(st.frames)[None] != tq[bg][:, None])
    err = np.linalg.norm(xy[bg] - truth, axis=-1)[seen]
    assert seen.sum() > 1000 and np.median(err) < 1.0, (seen.sum(), np.median(err))


def test_torch_backend_matches_onnx(clip_and_seq, tracked, tmp_path):
    """``--device torch-cpu`` runs the kernels' torch source (the measurement backend for GPU
    machines whose onnxruntime lacks CUDA): the tracks match the ONNX Runtime ones."""
    pytest.importorskip("torch")
    c, pat = clip_and_seq
    d = load_trackfile(track_clip(pat, tmp_path / "torch.npz", queries=c.query, device="torch-cpu",
                                  progress=Progress("quiet")))
    vis = tracked.visible & d.visible
    assert (tracked.visible == d.visible).mean() > 0.98
    err = np.linalg.norm(d.tracks_2d - tracked.tracks_2d, axis=-1)[vis]
    assert np.median(err) < 0.01 and np.percentile(err, 99) < 0.5, (np.median(err), np.percentile(err, 99))


def test_torch_cuda_without_a_gpu_is_a_clear_error(clip_and_seq, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    _, pat = clip_and_seq
    with pytest.raises(RuntimeError, match="torch sees no CUDA device"):
        track_clip(pat, tmp_path / "x.npz", grid=16, device="torch-cuda", progress=Progress("quiet"))
    assert not (tmp_path / "x.npz").exists()


def _carry_reference(value, weight, disp, where, cfg, prefer):
    """The neighbour carry point by point, as its docstring defines it (slow; small grids)."""
    h, w = weight.shape
    inv2sd = 1.0 / (2.0 * cfg.carry_motion_sigma ** 2)
    out = []
    for i, (y, x) in enumerate(zip(*np.nonzero(where))):
        for s in cfg.carry_scales:
            vs, ws = [], []
            for oy in range(-2, 3):
                for ox in range(-2, 3):
                    yy, xx = min(max(y + oy * s, 0), h - 1), min(max(x + ox * s, 0), w - 1)
                    dm = disp[:, yy, xx] - disp[:, y, x]
                    dp = value[:, yy, xx] - prefer[:, i]
                    pw = np.exp(-(dp ** 2).sum() * inv2sd)
                    ws.append(weight[yy, xx] * np.exp(-(dm ** 2).sum() * inv2sd
                                                      - (oy * oy + ox * ox) / 4.5)
                              * (1.0 if np.isnan(pw) else 0.1 + pw))
                    vs.append(value[:, yy, xx])
            ws, vs = np.array(ws), np.array(vs)
            if ws.sum() > cfg.carry_min_weight:
                med = []
                for c in range(2):
                    o = np.argsort(vs[:, c], kind="stable")
                    k = np.searchsorted(np.cumsum(ws[o]), 0.5 * ws.sum())
                    med.append(vs[o[k], c])
                out.append(med)
                break
        else:
            out.append((value * weight).reshape(2, -1).sum(1) / weight.sum())
    return np.array(out, np.float32).T


def test_neighbour_carry_skips_far_points_and_matches_its_definition():
    """Hidden points carried by visible neighbours (engine.track.field._carry): points far from
    every visible one (a pan's points that left the frame) skip the lattice search and take the
    global mean; the others get the weighted median of their nearest scale with support."""
    from engine.track.field import FieldSettings, _carry

    rng = np.random.default_rng(3)
    h, w = 40, 150
    cfg = FieldSettings()
    value = rng.normal(size=(2, h, w)).astype(np.float32)
    disp = (rng.normal(size=(2, h, w)) * 2).astype(np.float32)
    weight = np.zeros((h, w), np.float32)
    weight[:, 120:] = rng.random((h, 30))              # visible only on the right
    weight[rng.random((h, w)) < 0.003] = 0.7          # and a few scattered points
    where = weight == 0
    prefer = rng.normal(size=(2, int(where.sum()))).astype(np.float32)
    prefer[:, ::4] = np.nan
    got = _carry(value, weight, disp, where, cfg, prefer=prefer)
    np.testing.assert_allclose(got, _carry_reference(value, weight, disp, where, cfg, prefer),
                               atol=1e-5)
    far = np.nonzero(where)[1] < 2                    # > 108 px from the visible band
    glob = (value * weight).reshape(2, -1).sum(1) / weight.sum()
    assert far.any() and (np.abs(got[:, far] - glob[:, None]) < 1e-5).mean() > 0.5
