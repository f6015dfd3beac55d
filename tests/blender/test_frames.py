"""Frame mapping checked against Blender itself: the compositor's Movie Clip node renders the
footage frame Blender shows at a scene frame; Worldtrack's mapping (track-file frame -> scene
frame, with clip start frame, frame offset, movie vs numbered image sequence) must agree."""
import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
cv2 = pytest.importorskip("cv2")
import wt_synth  # noqa: E402

pytestmark = pytest.mark.blender
W, H = 64, 48


def _compositor_frame(scene, clip, frame: int, out) -> int:
    """Centre grey level of what Blender's compositor shows of ``clip`` at scene ``frame``."""
    if hasattr(scene, "compositing_node_group"):  # 5.x: compositor node groups
        ng = bpy.data.node_groups.new("comp", "CompositorNodeTree")
        scene.compositing_node_group = ng
        mc = ng.nodes.new("CompositorNodeMovieClip")
        out_node = ng.nodes.new("NodeGroupOutput")
        ng.interface.new_socket("Image", in_out="OUTPUT", socket_type="NodeSocketColor")
        ng.links.new(mc.outputs["Image"], out_node.inputs[0])
    else:  # 4.2
        scene.use_nodes = True
        nt = scene.node_tree
        for n in list(nt.nodes):
            nt.nodes.remove(n)
        mc = nt.nodes.new("CompositorNodeMovieClip")
        comp = nt.nodes.new("CompositorNodeComposite")
        nt.links.new(mc.outputs["Image"], comp.inputs["Image"])
    mc.clip = clip
    scene.render.use_compositing = True
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.render.filepath = str(out)
    scene.frame_set(frame)
    bpy.ops.render.render(write_still=True)
    return int(cv2.imread(str(out))[H // 2, W // 2, 0])


def _trackdata(first: int, T: int):
    from engine.trackfile import TrackData

    d = wt_synth.make_trackdata(T=T).data
    return TrackData(**d.arrays(), metadata=dict(d.metadata, frame_range=[first, first + T - 1]))


@pytest.mark.parametrize("source", ["MOVIE", "SEQUENCE"])
def test_scene_frames_show_the_tracked_footage_frames(scene, tmp_path, source):
    from worldtrack.operators import build

    n = 16
    levels_written = [16 + 12 * i for i in range(n)]
    if source == "MOVIE":
        path = tmp_path / "v.mp4"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (W, H))
        for lv in levels_written:
            vw.write(np.full((H, W, 3), lv, np.uint8))
        vw.release()
        cap = cv2.VideoCapture(str(path))
        levels = [int(cap.read()[1][H // 2, W // 2, 0]) for _ in range(n)]
        numbers = list(range(n))  # the engine numbers movie frames 0..n-1
        first = 5
    else:
        for i, lv in enumerate(levels_written):
            cv2.imwrite(str(tmp_path / f"s_{201 + i:04d}.png"), np.full((H, W, 3), lv, np.uint8))
        path = tmp_path / "s_0201.png"
        levels = levels_written
        numbers = [201 + i for i in range(n)]  # ...and sequence frames by their file number
        first = 206
    clip = bpy.data.movieclips.load(str(path))
    clip.frame_start = 10
    clip.frame_offset = 2
    data = _trackdata(first, 6)
    fm = build.frame_map(data, clip)
    for t in (0, 3, 5):
        shown = _compositor_frame(scene, clip, fm.scene_frame0 + t, tmp_path / f"o{t}.png")
        idx = int(np.argmin(np.abs(np.array(levels) - shown)))
        assert numbers[idx] == first + t, (source, t, numbers[idx], first + t)
