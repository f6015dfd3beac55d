"""A CG object attached to a moving surface, rendered headless with Cycles over the footage:
the rendered object sits where the surface is in the footage (its 2D tracks)."""
import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import wt_synth  # noqa: E402

pytestmark = pytest.mark.blender


def test_render_attached_cube_over_footage(scene, tmp_path):
    from engine.trackfile import load_trackfile, save_trackfile
    from worldtrack.operators import build, preview

    syn = wt_synth.make_trackdata(T=12, W=160, H=96, hidden_frac=0.0)
    data = load_trackfile(save_trackfile(tmp_path / "gt.npz", syn.data))
    clip = bpy.data.movieclips.load(str(wt_synth.write_video(tmp_path / "clip.mp4", data)))
    cam = build.build_camera(scene, clip, data)
    moving = np.flatnonzero(data.group == 0)
    fm = build.frame_map(data, clip)
    scene.frame_set(fm.scene_frame0)
    bpy.ops.mesh.primitive_cube_add(size=0.2)
    cube = bpy.context.active_object
    mat = bpy.data.materials.new("red")
    mat.use_nodes = True
    nodes = mat.node_tree.nodes
    em = nodes.new("ShaderNodeEmission")
    em.inputs["Color"].default_value = (1, 0, 0, 1)
    em.inputs["Strength"].default_value = 1.0
    out = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
    mat.node_tree.links.new(em.outputs[0], out.inputs["Surface"])
    cube.data.materials.append(mat)
    # Put the cube at the moving object's centre (true position at frame 0), then attach.
    centre0 = syn.object_motion[0, :3, 3]
    cube.location = build.local_to_world(scene, centre0[None])[0]
    build.attach_to_surface(scene, data, moving, [cube], clip=clip)
    t = 9
    res = preview.render_preview(scene, tmp_path / "preview.png", frame=fm.scene_frame0 + t, samples=4)
    assert res["png"].is_file() and res["png"].stat().st_size > 1000
    alpha = res["alpha"]
    assert alpha.sum() > 20, "the cube did not render"
    ys, xs = np.nonzero(alpha > 0.5)
    got = np.array([xs.mean(), ys.mean()])
    # Where the object's centre projects in the footage at that frame (exact camera + motion).
    c = syn.object_motion[t, :3, 3]
    Xc = np.linalg.inv(data.cam_to_world[t].astype(np.float64)) @ np.r_[c, 1]
    K = data.K[t].astype(np.float64)
    want = (K @ (Xc[:3] / Xc[2]))[:2]
    assert np.linalg.norm(got - want) < 2.0, (got, want)
    # The composite shows the footage around the cube.
    img = bpy.data.images.load(str(res["png"]))
    assert tuple(img.size) == data.image_size


def test_build_demo_scene(scene, tmp_path):
    from engine.trackfile import load_trackfile, save_trackfile
    from worldtrack.operators import pipeline

    syn = wt_synth.make_trackdata(T=10, W=160, H=96)
    data = load_trackfile(save_trackfile(tmp_path / "gt.npz", syn.data))
    clip = bpy.data.movieclips.load(str(wt_synth.write_video(tmp_path / "clip.mp4", data)))
    s = pipeline.build_demo_scene(scene, clip, data, tmp_path / "out", n_empties=10,
                                  preview_png=tmp_path / "out" / "preview.png", samples=2)
    assert s["empties"] == 10 and s["points"] == data.n_tracks and s["surface"]["group"] == 0
    assert (tmp_path / "out" / "preview.png").is_file() and (tmp_path / "out" / "points.pc2").is_file()
    assert bpy.data.objects[s["surface"]["object"]].parent.name == s["surface"]["empty"]
    bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / "out" / "demo.blend"))
