"""Cross-check against the benchmark generator's rendered ground truth (a different code path:
Blender renders the clip, ray casts give the tracks): the solved camera built from ``gt.npz``
reprojects the 3D tracks onto the 2D tracks through Blender's own camera, and Attach to Surface
follows the rendered moving object."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")

pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    if not (ROOT / "benchmarks" / "generate" / "clip.py").is_file():
        pytest.skip("benchmark generator not available")
    out = {}
    for kind in ("zoom", "dynamic"):
        d = tmp_path_factory.mktemp(kind)
        r = subprocess.run([sys.executable, "-m", "benchmarks.generate", "--kind", kind, "--seed", "1",
                            "--size", "96x64", "--frames", "8", "--samples", "1", "--queries", "300",
                            "--no-depth", "--out", str(d)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        out[kind] = d
    return out


def _load(scene, d):
    from engine.trackfile import load_trackfile

    data = load_trackfile(d / "gt.npz")
    clip = bpy.data.movieclips.load(str(d / "clip.mp4"))
    scene.active_clip = clip
    return data, clip


@pytest.mark.parametrize("kind", ["zoom", "dynamic"])
def test_camera_reprojects_generated_tracks(generated, scene, kind):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    from worldtrack.operators import build

    data, clip = _load(scene, generated[kind])
    assert tuple(clip.size) == data.image_size and clip.frame_duration == data.n_frames
    cam = build.build_camera(scene, clip, data)
    fm = build.frame_map(data, clip)
    W, H = data.image_size
    worst = 0.0
    for t in range(0, data.n_frames, 3):
        scene.frame_set(fm.scene_frame0 + t)
        vis = np.flatnonzero(np.asarray(data.visible[:, t]))
        for i in vis:
            v = world_to_camera_view(scene, cam, Vector(data.tracks_3d[i, t].astype(float)))
            px = np.array([v.x * W - 0.5, (1 - v.y) * H - 0.5])
            worst = max(worst, float(np.abs(px - data.tracks_2d[i, t]).max()))
    assert worst < 0.02, f"{kind}: worst reprojection through Blender's camera {worst:.4f} px"


def test_attach_follows_generated_object(generated, scene):
    from worldtrack.operators import build

    data, clip = _load(scene, generated["dynamic"])
    groups = np.asarray(data.group)
    g = max((k for k in np.unique(groups) if k >= 0), key=lambda k: (groups == k).sum())
    region = np.flatnonzero(groups == g)
    ok0 = np.isfinite(data.tracks_3d[region, 0]).all(1)
    region = region[ok0]
    assert len(region) >= 3
    fm = build.frame_map(data, clip)
    emp = build.attach_to_surface(scene, data, region, [], ref_frame=0, clip=clip)
    scene.frame_set(fm.scene_frame0)
    E0 = np.array(emp.matrix_world)
    P0 = np.asarray(data.tracks_3d[region, 0], np.float64)
    for t in range(1, data.n_frames):
        scene.frame_set(fm.scene_frame0 + t)
        A = np.array(emp.matrix_world) @ np.linalg.inv(E0)
        pred = P0 @ A[:3, :3].T + A[:3, 3]
        true = np.asarray(data.tracks_3d[region, t], np.float64)
        fin = np.isfinite(true).all(1)
        err = np.linalg.norm(pred[fin] - true[fin], axis=1)
        assert np.median(err) < 1e-3, f"frame {t}: median {np.median(err):.2e}"
