"""The artist's workflow in real (headless) Blender on exact synthetic track files and a real
movie: solved camera (projection through Blender's own camera vs the 2D tracks), scene set-up,
empties and the point-cache mesh on the true 3D positions (evaluated depsgraph), native tracks,
Attach to Surface on a moving object, orientation tools, both action APIs."""
import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import wt_synth  # noqa: E402
from wt_synth import blender42  # noqa: E402

pytestmark = pytest.mark.blender


@pytest.fixture
def clip_setup(scene, tmp_path):
    """A movie clip starting at scene frame 10, footage frame offset 1, tracked from footage
    frame 3; scene unit scale 0.01 (1 BU = 1 cm) and a scene resolution unlike the clip's."""
    syn = wt_synth.make_trackdata(T=20, first_frame=3, zoom=True)
    from engine.trackfile import save_trackfile

    path = save_trackfile(tmp_path / "gt.npz", syn.data)
    movie = wt_synth.write_video(tmp_path / "clip.mp4", syn.data, n_frames=26)
    clip = bpy.data.movieclips.load(str(movie))
    clip.frame_start = 10
    clip.frame_offset = 1
    scene.unit_settings.scale_length = 0.01
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080
    scene.active_clip = clip
    from engine.trackfile import load_trackfile

    data = load_trackfile(path)
    clip.worldtrack.result_path = str(path)
    return syn, data, clip


def _projected_px(scene, cam, world_pts):
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector

    W, H = scene.render.resolution_x, scene.render.resolution_y
    out = []
    for p in world_pts:
        v = world_to_camera_view(scene, cam, Vector(p))
        out.append((v.x * W - 0.5, (1.0 - v.y) * H - 0.5))  # normalised bottom-left -> OpenCV px
    return np.array(out)


def _world(scene, local):
    from worldtrack.operators import build

    return build.local_to_world(scene, local)


def test_frame_mapping(clip_setup):
    from worldtrack.operators import build

    _, data, clip = clip_setup
    fm = build.frame_map(data, clip)
    # footage frame 3 -> clip frame 3 + 1 - offset(1) = 3 -> scene frame 3 + 10 - 1 = 12
    assert (fm.clip_frame0, fm.scene_frame0) == (3, 12)


def test_solve_camera_projects_tracks(clip_setup, scene):
    from worldtrack.operators import build

    syn, data, clip = clip_setup
    ret = bpy.ops.worldtrack.solve_camera()
    assert ret == {"FINISHED"}
    cam = scene.camera
    assert cam is not None and cam.name == "WorldtrackCamera"
    # Scene matches the clip: resolution, frame range, fps.
    assert (scene.render.resolution_x, scene.render.resolution_y) == tuple(clip.size) == data.image_size
    assert (scene.frame_start, scene.frame_end) == (12, 12 + data.n_frames - 1)
    assert scene.render.fps / scene.render.fps_base == pytest.approx(24.0)
    assert cam.data.background_images[0].clip == clip
    s = 1.0 / scene.unit_settings.scale_length
    for t in (0, 7, data.n_frames - 1):
        scene.frame_set(12 + t)
        vis = np.flatnonzero(data.visible[:, t] & np.isfinite(data.tracks_3d[:, t]).all(1))
        world = _world(scene, np.asarray(data.tracks_3d[vis, t], np.float64) * s)
        px = _projected_px(scene, cam, world)
        err = np.abs(px - data.tracks_2d[vis, t]).max()
        assert err < 2e-3, f"frame {t}: max reprojection difference {err} px"
        # Camera path = ground truth (OpenCV -> Blender axes, unit scale).
        want = np.asarray(data.cam_to_world[t], np.float64) @ np.diag([1, -1, -1, 1])
        want[:3, 3] *= s
        got = np.array(cam.matrix_world)
        assert np.abs(got[:3, :3] - want[:3, :3]).max() < 1e-5
        assert np.abs(got[:3, 3] - want[:3, 3]).max() < 1e-3 * s
    # Intrinsics written into the clip's tracking camera (first frame).
    tc = clip.tracking.camera
    W, H = data.image_size
    assert tc.focal_length == pytest.approx(float(data.K[0, 0, 0]) * tc.sensor_width / W, rel=1e-5)
    assert tc.principal_point_pixels[0] == pytest.approx(float(data.K[0, 0, 2]) + 0.5, abs=1e-3)
    assert tc.principal_point_pixels[1] == pytest.approx(H - (float(data.K[0, 1, 2]) + 0.5), abs=1e-3)


def test_camera_when_trackfile_resolution_differs(scene, tmp_path):
    """Track file in 2x the clip's pixels (e.g. tracked on full-res, clip is a proxy)."""
    from engine.trackfile import TrackData
    from worldtrack.operators import build

    syn = wt_synth.make_trackdata(T=8, W=160, H=96)
    movie = wt_synth.write_video(tmp_path / "c.mp4", syn.data)
    d = syn.data
    K2 = d.K.copy()
    K2[:, :2, :2] *= 2
    K2[:, :2, 2] = (K2[:, :2, 2] + 0.5) * 2 - 0.5
    md = dict(d.metadata, image_size=[320, 192])
    big = TrackData(query=d.query, tracks_2d=(d.tracks_2d + 0.5) * 2 - 0.5, visible=d.visible,
                    confidence=d.confidence, tracks_3d=d.tracks_3d, cam_to_world=d.cam_to_world,
                    K=K2, metadata=md)
    clip = bpy.data.movieclips.load(str(movie))
    cam = build.build_camera(scene, clip, big)
    assert (scene.render.resolution_x, scene.render.resolution_y) == (160, 96)
    scene.frame_set(scene.frame_start + 3)
    vis = np.flatnonzero(d.visible[:, 3] & np.isfinite(d.tracks_3d[:, 3]).all(1))
    px = _projected_px(scene, cam, _world(scene, d.tracks_3d[vis, 3]))
    assert np.abs(px - d.tracks_2d[vis, 3]).max() < 2e-3


def test_empties_follow_tracks(clip_setup, scene):
    from worldtrack.operators import build

    syn, data, clip = clip_setup
    ids = np.array([0, 7, 14, data.n_tracks - 1, data.n_tracks - 5])  # static (some unknown) + moving
    coll = build.create_empties(scene, data, ids, clip=clip)
    assert len(coll.objects) == len(ids)
    s = 1.0 / scene.unit_settings.scale_length
    fm = build.frame_map(data, clip)
    for t in (0, 5, 13, data.n_frames - 1):
        scene.frame_set(fm.scene_frame0 + t)
        for tid in ids:
            ob = coll.objects[f"WT_{tid:07d}"]
            x = np.asarray(data.tracks_3d[tid, t], np.float64)
            if np.isfinite(x).all():
                want = _world(scene, x[None] * s)[0]
                assert np.abs(np.array(ob.matrix_world.translation) - want).max() < 1e-3 * s
            assert ob["visible"] == float(data.visible[tid, t])
    # Bulk keys went through the API of this Blender: layered actions from 4.4, legacy in 4.2.
    act = coll.objects[0].animation_data.action
    if blender42():
        assert len(act.fcurves) == 4
    else:
        assert len(act.layers) == 1 and len(act.layers[0].strips[0].channelbags[0].fcurves) == 4


def test_point_cache_mesh(clip_setup, scene, tmp_path):
    from worldtrack.operators import build, pc2

    syn, data, clip = clip_setup
    ob = build.create_point_cache_mesh(scene, data, None, tmp_path / "pts.pc2", clip=clip)
    assert len(ob.data.vertices) == data.n_tracks
    h = pc2.read_pc2_header(tmp_path / "pts.pc2")
    assert (h["n_verts"], h["n_frames"]) == (data.n_tracks, data.n_frames)
    s = 1.0 / scene.unit_settings.scale_length
    fm = build.frame_map(data, clip)
    for t in (0, 6, data.n_frames - 1):
        scene.frame_set(fm.scene_frame0 + t)
        dg = bpy.context.evaluated_depsgraph_get()
        me = ob.evaluated_get(dg).to_mesh()
        co = np.empty(len(me.vertices) * 3, np.float32)
        me.vertices.foreach_get("co", co)
        ob.evaluated_get(dg).to_mesh_clear()
        co = co.reshape(-1, 3) @ np.array(ob.matrix_world)[:3, :3].T + np.array(ob.matrix_world)[:3, 3]
        x = np.asarray(data.tracks_3d[:, t], np.float64)
        ok = np.isfinite(x).all(1)
        assert np.abs(co[ok] - _world(scene, x[ok] * s)).max() < 1e-3 * s
    # Attributes: colours from the footage, visibility bits per frame.
    me = ob.data
    vis0 = np.empty(len(me.vertices), np.int32)
    me.attributes["visible_0"].data.foreach_get("value", vis0)
    bits = (vis0.view(np.uint32)[:, None] >> np.arange(data.n_frames, dtype=np.uint32)) & 1
    assert np.array_equal(bits.astype(bool), np.asarray(data.visible))
    col = np.empty(len(me.vertices) * 4, np.float32)
    me.color_attributes["Col"].data.foreach_get("color_srgb", col)
    assert np.abs(col.reshape(-1, 4)[:, :3] * 255 - data.colors).max() < 1.01


def test_native_tracks(clip_setup, scene):
    from worldtrack.operators import build, camera_math

    syn, data, clip = clip_setup
    ids = [2, 30, data.n_tracks - 3]
    names = build.export_native_tracks(clip, data, ids)
    fm = build.frame_map(data, clip)
    W, H = clip.size
    for name, tid in zip(names, ids):
        tr = clip.tracking.tracks[name]
        assert len(tr.markers) == data.n_frames
        for m in tr.markers:
            t = m.frame - fm.clip_frame0
            assert 0 <= t < data.n_frames
            px = camera_math.marker_to_pixels(np.array(m.co), W, H)
            assert np.abs(px - data.tracks_2d[tid, t]).max() < 1e-3
            assert m.mute == (not data.visible[tid, t])
    # Re-export replaces instead of duplicating.
    build.export_native_tracks(clip, data, ids)
    assert sum(1 for t in clip.tracking.tracks if t.name in names) == len(names)


def test_attach_to_surface_follows_moving_object(clip_setup, scene):
    from worldtrack.operators import build

    syn, data, clip = clip_setup
    fm = build.frame_map(data, clip)
    moving = np.flatnonzero(data.group == 0)
    # Corrupt some of the region's 3D points (outliers) to check robustness.
    from engine.trackfile import TrackData

    X = np.array(data.tracks_3d)
    bad = moving[:6]
    X[bad, 5:12] += np.random.default_rng(3).normal(0, 0.5, (len(bad), 7, 3)).astype(np.float32)
    noisy = TrackData(**{**data.arrays(), "tracks_3d": X}, metadata=data.metadata)
    cube = bpy.data.objects.new("CG", bpy.data.meshes.new("CG"))
    scene.collection.objects.link(cube)
    cube.location = (10.0, 20.0, 30.0)
    scene.frame_set(fm.scene_frame0 + 4)
    before = np.array(cube.matrix_world)
    emp = build.attach_to_surface(scene, noisy, moving, [cube], clip=clip)
    scene.frame_set(fm.scene_frame0 + 4)
    assert np.abs(np.array(cube.matrix_world) - before).max() < 1e-3  # kept in place
    s = 1.0 / scene.unit_settings.scale_length
    Mo = syn.object_motion.copy()
    Mo[:, :3, 3] *= s
    rel_true = lambda t: Mo[t] @ np.linalg.inv(Mo[4])  # noqa: E731 - true motion since frame 4
    E4 = np.array(emp.matrix_world)
    for t in (0, 8, 12, data.n_frames - 1):
        scene.frame_set(fm.scene_frame0 + t)
        E = np.array(emp.matrix_world)
        assert np.abs(E @ np.linalg.inv(E4) - rel_true(t))[:3, :3].max() < 1e-3
        assert np.abs(E @ np.linalg.inv(E4) - rel_true(t))[:3, 3].max() < 1e-3 * s
        # The attached object moves rigidly with the surface.
        assert np.abs(np.array(cube.matrix_world) - rel_true(t) @ before).max() < 2e-3 * s


def test_orientation_tools(clip_setup, scene):
    from worldtrack.operators import build

    syn, data, clip = clip_setup
    scene.unit_settings.scale_length = 1.0
    build.build_camera(scene, clip, data)
    floor = np.flatnonzero((data.group < 0) & (np.abs(data.tracks_3d[:, 0, 2]) < 1e-6)
                           & np.isfinite(data.tracks_3d[:, 0]).all(1))
    # Tilt and move the scene first so there is something to undo.
    root = build.ensure_root(scene)
    from mathutils import Euler, Matrix

    root.matrix_world = Matrix.Translation((1, 2, 3)) @ Euler((0.3, -0.2, 0.5)).to_matrix().to_4x4()
    P = _world(scene, np.asarray(data.tracks_3d[floor, 0], np.float64))
    up = _world(scene, build.camera_centres(data, 1.0)).mean(0)
    build.set_floor(scene, P, up)
    P2 = _world(scene, np.asarray(data.tracks_3d[floor, 0], np.float64))
    assert np.abs(P2[:, 2]).max() < 1e-4
    assert (_world(scene, build.camera_centres(data, 1.0))[:, 2] > 0).all()  # cameras above
    # Detected ground plane finds the same floor.
    det = _world(scene, build.detect_ground_plane(data, 1.0))
    assert len(det) >= 0.8 * len(floor) and np.abs(det[:, 2]).max() < 0.05
    # Origin and scale.
    build.set_origin(scene, P2[0])
    assert np.abs(_world(scene, np.asarray(data.tracks_3d[floor[:1], 0], np.float64))).max() < 1e-4
    a, b = _world(scene, np.asarray(data.tracks_3d[floor[[0, -1]], 0], np.float64))
    build.set_scale(scene, a, b, 2.5)
    a, b = _world(scene, np.asarray(data.tracks_3d[floor[[0, -1]], 0], np.float64))
    assert np.linalg.norm(a - b) == pytest.approx(2.5, rel=1e-5)


def test_operators_via_bpy_ops(clip_setup, scene):
    syn, data, clip = clip_setup
    ws = scene.worldtrack
    assert bpy.ops.worldtrack.solve_camera() == {"FINISHED"}
    ws.count = 12
    assert bpy.ops.worldtrack.create_empties() == {"FINISHED"}
    assert len(bpy.data.collections["Worldtrack Empties"].objects) == 12
    assert bpy.ops.worldtrack.export_tracks() == {"FINISHED"}
    # Attach: region around the moving object's centre at the current frame.
    from worldtrack.operators import build

    fm = build.frame_map(data, clip)
    scene.frame_set(fm.scene_frame0 + 2)
    moving = np.flatnonzero((data.group == 0) & data.visible[:, 2])
    cx, cy = np.median(data.tracks_2d[moving, 2], axis=0)
    W, H = data.image_size
    ws.select_mode, ws.radius, ws.count, ws.group = "CURSOR", 60.0, 1000, 0
    ws.cursor = ((cx + 0.5) / W, 1 - (cy + 0.5) / H)
    assert bpy.ops.worldtrack.attach_to_surface() == {"FINISHED"}
    # No result -> greyed out, and a clear error when forced.
    clip.worldtrack.result_path = ""
    assert not bpy.ops.worldtrack.solve_camera.poll()


def test_image_sequence_frame_numbers(scene, tmp_path):
    """Sequences are numbered by file name: frames 0101.. loaded from the first file; a track
    file over footage frames 103..110 starts at clip frame 3 (and Track Clip asks for file numbers)."""
    import cv2

    from engine.trackfile import TrackData
    from worldtrack.operators import build, track

    syn = wt_synth.make_trackdata(T=8)
    seq = tmp_path / "seq"
    seq.mkdir()
    for n in range(101, 113):
        cv2.imwrite(str(seq / f"shot_{n:04d}.png"), np.full((96, 160, 3), n % 255, np.uint8))
    clip = bpy.data.movieclips.load(str(seq / "shot_0101.png"))
    assert clip.source == "SEQUENCE" and clip.frame_duration == 12
    clip.frame_start = 5
    d = TrackData(**syn.data.arrays(), metadata=dict(syn.data.metadata, frame_range=[103, 110]))
    fm = build.frame_map(d, clip)
    assert (fm.clip_frame0, fm.scene_frame0) == (3, 7)
    names = build.export_native_tracks(clip, d, [0])
    assert clip.tracking.tracks[names[0]].markers[0].frame == 3
    st = clip.worldtrack
    st.use_frame_range, st.frame_start, st.frame_end = True, 3, 10
    s = track.track_settings(bpy.context, clip)
    assert (s["start"], s["end"]) == (103, 110)
    assert track.engine_input(clip) == str(seq / "shot_####.png")


def test_solve_twice_updates_in_place(clip_setup, scene):
    syn, data, clip = clip_setup
    assert bpy.ops.worldtrack.solve_camera() == {"FINISHED"}
    n_obj, n_act = len(bpy.data.objects), len(bpy.data.actions)
    assert bpy.ops.worldtrack.solve_camera() == {"FINISHED"}
    assert (len(bpy.data.objects), len(bpy.data.actions)) == (n_obj, n_act)
    cam = scene.camera.data
    assert cam.animation_data is not None and cam.animation_data.action is not None  # zoom keyed


def test_point_cache_operator_unsaved_and_saved(clip_setup, scene, tmp_path):
    """Unsaved file: caches go to a user/temp folder; saved: next to the .blend, relative path."""
    import tempfile
    from pathlib import Path

    syn, data, clip = clip_setup
    from worldtrack.operators import build

    assert build.default_cache_dir(clip) == Path(tempfile.gettempdir()) / "worldtrack_cache"
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "shot.blend"))
    scene = bpy.context.scene
    assert build.default_cache_dir(None) == tmp_path / "worldtrack_cache"
    assert bpy.ops.worldtrack.create_point_cache() == {"FINISHED"}
    ob = bpy.data.objects["Worldtrack Points"]
    mod = ob.modifiers["Worldtrack Cache"]
    assert mod.filepath.startswith("//") and Path(bpy.path.abspath(mod.filepath)).is_file()
    assert Path(bpy.path.abspath(mod.filepath)).parent == tmp_path / "worldtrack_cache"


def test_solve_warnings_reach_the_user(clip_setup, scene, tmp_path, capfd):
    """Warnings of the solve report (e.g. a weakly constrained focal) are kept on the clip, shown
    in the panel and reported by Solve Camera."""
    from engine.trackfile import load_trackfile, save_trackfile
    from worldtrack.operators import common

    syn, _, clip = clip_setup
    warn = ["focal length poorly constrained by this shot: ±5.0 % (1σ)", "second warning"]
    syn.data.metadata["solve"] = {**(syn.data.metadata.get("solve") or {}), "warnings": warn}
    path = save_trackfile(tmp_path / "warned.npz", syn.data)
    common.set_result(clip, path, load_trackfile(path))
    assert clip.worldtrack.solve_warnings.splitlines() == warn
    # the moving groups are listed (ground truth: no kinds; test_math: a solved file names them)
    assert clip.worldtrack.groups.splitlines() == [
        f"Group {k}: {n} tracks"
        for k, n in enumerate(np.bincount(syn.data.group[syn.data.group >= 0])) if n]
    assert clip.worldtrack.groups
    capfd.readouterr()
    assert bpy.ops.worldtrack.solve_camera() == {"FINISHED"}
    out = "".join(capfd.readouterr())
    assert "Solve: focal length poorly constrained" in out and "Solve: second warning" in out
    # a result without warnings clears them
    syn.data.metadata["solve"]["warnings"] = []
    path2 = save_trackfile(tmp_path / "clean.npz", syn.data)
    common.set_result(clip, path2, load_trackfile(path2))
    assert clip.worldtrack.solve_warnings == ""
