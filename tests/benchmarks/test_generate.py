"""Ground-truth clip generator (issue 3): exact answers checked against Cycles' own depth render.

Tiny clips (64x48, 6 frames, 2 samples) so the whole file runs in well under a minute.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")

from benchmarks.generate import (ClipSettings, clip_dir, generate_clip, is_cached,  # noqa: E402
                                 render_suite)
from benchmarks.generate.camera_model import k_from_lens, k_from_projection, project  # noqa: E402
from benchmarks.generate.selfcheck import self_check  # noqa: E402
from engine.trackfile import TrackData, load_trackfile  # noqa: E402

KINDS = ("static", "dynamic", "tripod", "zoom", "deform")
TINY = dict(width=64, height=48, n_frames=6, samples=2, n_queries=128)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    return {k: generate_clip(root / k, k, seed=0, **TINY) for k in KINDS}


def _load(d: Path) -> TrackData:
    return load_trackfile(d / "gt.npz", mmap=False)


def _in_image(xy: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.isfinite(xy).all(-1) & (xy >= -0.5).all(-1) & (xy <= np.array([w, h]) - 0.5).all(-1)


@pytest.mark.parametrize("kind", KINDS)
def test_self_check_passes(clips, kind):
    d = _load(clips[kind])
    md = d.metadata
    assert md["ground_truth"] is True and md["kind"] == kind and md["seed"] == 0
    assert d.depth.shape == (6, 48, 64) and d.n_tracks == 128
    r = self_check(d)
    assert r.ok, r.as_dict()
    assert r.reproj_max_px < 0.01 and r.depth_max_rel < 1e-3
    # The depth comparison is not vacuous: most visible point-frames are compared.
    assert r.depth_checked > 0.4 * d.visible.sum()
    assert md["self_check"]["ok"] is True
    assert md["generator"]["render_seconds_per_frame"] > 0


def test_self_check_catches_half_pixel_and_geometry_errors(clips):
    d = _load(clips["dynamic"])
    arrays = d.arrays()
    # (a) principal point off by half a pixel, tracks re-derived consistently: only the comparison
    #     with Cycles' depth can notice, and it must.
    k = d.K.copy()
    k[:, 0, 2] += 0.5
    t2 = np.stack([project(d.tracks_3d[:, t], d.cam_to_world[t], k[t])[0]
                   for t in range(d.n_frames)], 1).astype(np.float32)
    q = d.query.copy()
    q[:, 1:] = t2[np.arange(d.n_tracks), q[:, 0].astype(int)]
    bad = TrackData(**{**arrays, "K": k, "tracks_2d": t2, "query": q}, metadata=d.metadata)
    assert not self_check(bad).ok
    # (b) moving points displaced by 2 cm in 3D: re-projection fails.
    p3 = d.tracks_3d.copy()
    p3[d.group >= 0] += np.float32(0.02)
    assert not self_check(TrackData(**{**arrays, "tracks_3d": p3}, metadata=d.metadata)).ok
    # (c) occluded points claimed visible: the depth render disagrees.
    vis = d.visible | _in_image(d.tracks_2d, *d.image_size)
    r = self_check(TrackData(**{**arrays, "visible": vis, "confidence": vis.astype(np.float32)},
                             metadata=d.metadata))
    assert not r.ok and r.visible_agree < 0.98


def test_moving_rigid_objects(clips):
    d = _load(clips["dynamic"])
    groups = {int(k): v for k, v in d.metadata["dynamic_groups"].items()}
    assert 2 <= len(groups) <= 5 and set(groups.values()) == {"rigid"}
    moving = d.group >= 0
    assert moving.sum() >= 5 and set(np.unique(d.group[moving])) <= set(groups)
    travel = np.linalg.norm(d.tracks_3d[moving, -1] - d.tracks_3d[moving, 0], axis=-1)
    assert np.median(travel) > 0.05  # metres over 6 frames
    # Rigid: distances between points of one object are preserved over time.
    for g in np.unique(d.group[moving]):
        p = d.tracks_3d[d.group == g].astype(np.float64)
        if len(p) < 2:
            continue
        dist = np.linalg.norm(p[:, None] - p[None], axis=-1)  # (n, n, T)
        assert np.abs(dist - dist[..., :1]).max() < 1e-4


def test_static_points_constant(clips):
    for kind in ("static", "dynamic"):
        d = _load(clips[kind])
        st = d.tracks_3d[d.group == -1]
        assert len(st) > 10 and np.array_equal(st, np.repeat(st[:, :1], d.n_frames, axis=1))
    assert (_load(clips["static"]).group == -1).all()


def test_occlusions_in_dynamic_clip(clips):
    d = _load(clips["dynamic"])
    occluded = _in_image(d.tracks_2d, *d.image_size) & ~d.visible
    assert occluded.sum() > 0
    r = self_check(d)
    assert r.occluded_checked == occluded.sum() and r.occluded_agree >= 0.98
    assert np.array_equal(d.confidence, d.visible.astype(np.float32))


def test_tripod_rotates_about_fixed_centre(clips):
    d = _load(clips["tripod"])
    c = d.cam_to_world[:, :3, 3]
    assert np.abs(c - c[0]).max() < 1e-6
    r = d.cam_to_world[:, :3, :3].astype(np.float64)
    ang = np.degrees(np.arccos(np.clip((np.trace(r[0].T @ r[-1]) - 1) / 2, -1, 1)))
    assert ang > 0.1


def test_zoom_focal_varies(clips):
    f = _load(clips["zoom"]).K[:, 0, 0]
    assert f.max() / f.min() > 1.1 and (np.diff(f) != 0).all()
    f_static = _load(clips["static"]).K[:, 0, 0]
    assert np.ptp(f_static) == 0


def test_deforming_object(clips):
    d = _load(clips["deform"])
    groups = {int(k): v for k, v in d.metadata["dynamic_groups"].items()}
    assert "deform" in groups.values() and "rigid" in groups.values()
    g = [k for k, v in groups.items() if v == "deform"][0]
    p = d.tracks_3d[d.group == g].astype(np.float64)
    assert len(p) >= 3
    dist = np.linalg.norm(p[:, None] - p[None], axis=-1)
    assert np.abs(dist - dist[..., :1]).max() > 1e-3  # non-rigid: distances change


def test_queries_and_colors(clips):
    d = _load(clips["dynamic"])
    t = d.query[:, 0].astype(int)
    # About half on a jittered grid at frame 0 (grid cells that see only sky are dropped), the
    # rest at random later frames.
    assert 0.35 * 128 <= (t == 0).sum() <= 64 and (t <= 5).all() and len(np.unique(t[t > 0])) >= 3
    x0 = d.query[t == 0, 1:]
    assert np.ptp(x0[:, 0]) > 0.8 * 64 and np.ptp(x0[:, 1]) > 0.5 * 48
    img = cv2.imread(str(clips["dynamic"] / "frames" / "00000.png"))[:, :, ::-1]
    q0 = d.query[t == 0]
    x, y = np.round(q0[:, 1]).astype(int), np.round(q0[:, 2]).astype(int)
    assert np.array_equal(d.colors[t == 0], img[y, x])
    assert np.abs(d.tracks_2d[np.arange(d.n_tracks), t] - d.query[:, 1:]).max() < 1e-3


def test_frames_and_mp4(clips):
    d = clips["dynamic"]
    pngs = sorted((d / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
    img = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 64, 3) and img.dtype == np.uint8
    cap = cv2.VideoCapture(str(d / "clip.mp4"))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    # The video is the PNG sequence, frame for frame (lossy H.264 but close).
    for i in (0, 5):
        ref = cv2.imread(str(pngs[i])).astype(np.float64)
        errs = [np.abs(f - ref).mean() for f in frames]
        assert int(np.argmin(errs)) == i and errs[i] < 12
    clip = bpy.data.movieclips.load(str(d / "clip.mp4"))
    try:
        assert clip.frame_duration == 6 and tuple(clip.size) == (64, 48)
    finally:
        bpy.data.movieclips.remove(clip)


def test_deterministic_by_seed(clips, tmp_path):
    a = _load(clips["dynamic"])
    b = _load(generate_clip(tmp_path / "again", "dynamic", seed=0, **TINY))
    for name, arr in a.arrays().items():
        assert np.array_equal(arr, b.arrays()[name], equal_nan=True), name
    c = _load(generate_clip(tmp_path / "other", "dynamic", seed=1, **TINY))
    assert not np.allclose(a.cam_to_world, c.cam_to_world)


def test_options_blur_noise_exposure(clips, tmp_path):
    d = generate_clip(tmp_path / "fx", "dynamic", seed=0, motion_blur=True, noise=0.02,
                      exposure_change=True, with_depth=False, **TINY)
    gt = _load(d)
    assert gt.depth is None
    assert gt.metadata["self_check"]["ok"] is True  # checked against the depth render anyway
    ev = np.array(gt.metadata["generator"]["exposure_ev"])
    assert len(ev) == 6 and np.ptp(ev) > 0.05
    clean = _load(clips["dynamic"])
    assert np.array_equal(gt.tracks_3d, clean.tracks_3d)  # effects change pixels, not geometry
    a = cv2.imread(str(d / "frames" / "00003.png")).astype(int)
    b = cv2.imread(str(clips["dynamic"] / "frames" / "00003.png")).astype(int)
    assert np.abs(a - b).mean() > 2


def test_suite_cache_and_cli(tmp_path, capsys):
    from benchmarks.generate.__main__ import main

    s = ClipSettings("static", 3, 32, 24, 2, samples=1, n_queries=16)
    d = render_suite(tmp_path, [s], log=None)[0]
    assert d == clip_dir(tmp_path, s) == tmp_path / "static_3" and is_cached(d, s)
    mtime = (d / "gt.npz").stat().st_mtime_ns
    logs: list[str] = []
    render_suite(tmp_path, [s], log=logs.append)
    assert logs[0].startswith("cached") and (d / "gt.npz").stat().st_mtime_ns == mtime
    assert not is_cached(d, ClipSettings("static", 3, 32, 24, 2, samples=2, n_queries=16))
    assert main(["--kind", "zoom", "--seed", "1", "--size", "32x24", "--frames", "2", "--samples",
                 "1", "--queries", "16", "--fps", "30", "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["self_check"]["ok"] is True
    gt = _load(tmp_path / "cli")
    assert gt.image_size == (32, 24) and gt.n_frames == 2 and gt.n_tracks == 16
    assert gt.metadata["fps"] == 30.0
    cap = cv2.VideoCapture(str(tmp_path / "cli" / "clip.mp4"))
    assert abs(cap.get(cv2.CAP_PROP_FPS) - 30.0) < 1e-3
    capsys.readouterr()
    assert main(["--check", str(tmp_path / "cli")]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        generate_clip(tmp_path, "nope")
    with pytest.raises(ValueError, match="even"):
        generate_clip(tmp_path, "static", width=33, height=24)


@pytest.mark.parametrize("fit,w,h,shift", [("AUTO", 64, 48, (0.0, 0.0)), ("AUTO", 48, 64, (0.1, -0.05)),
                                            ("HORIZONTAL", 64, 48, (0.0, 0.0)),
                                            ("VERTICAL", 64, 48, (0.0, 0.0)),
                                            ("AUTO", 320, 240, (-0.07, 0.12))])
def test_k_from_blender_projection_matches_lens_formula(fit, w, h, shift):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    sc = bpy.context.scene
    sc.render.resolution_x, sc.render.resolution_y = w, h
    cam = bpy.data.cameras.new("c")
    cam.lens, cam.sensor_width, cam.sensor_height, cam.sensor_fit = 31.0, 36.0, 20.0, fit
    cam.shift_x, cam.shift_y = shift
    obj = bpy.data.objects.new("c", cam)
    sc.collection.objects.link(obj)
    dg = bpy.context.evaluated_depsgraph_get()
    proj = np.array(obj.evaluated_get(dg).calc_matrix_camera(dg, x=w, y=h, scale_x=1, scale_y=1))
    k1 = k_from_projection(proj, w, h)
    k2 = k_from_lens(31.0, 36.0, 20.0, fit, w, h, *shift)
    assert np.allclose(k1, k2, atol=1e-4), (k1, k2)


@pytest.mark.slow
def test_full_size_dynamic_clip(tmp_path):
    """A benchmark-size clip (320x240, 48 frames, 16 samples): self-check, occlusions, timing."""
    d = _load(generate_clip(tmp_path / "full", "dynamic", seed=0))
    r = self_check(d)
    assert r.ok, r.as_dict()
    assert r.depth_checked > 0.6 * d.visible.sum() and r.occluded_checked > 100
    assert d.tracks_2d.shape == (1024, 48, 2) and d.depth.shape == (48, 240, 320)
