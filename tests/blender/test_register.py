"""Registration in real Blender: idempotent, cheap, complete; every operator's poll and every
panel's draw run without error (panels are drawn into a recorder that checks each call against
UILayout's real RNA API, since headless Blender has no window to draw into)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

bpy = pytest.importorskip("bpy")
import wt_synth  # noqa: E402

pytestmark = pytest.mark.blender
ROOT = Path(__file__).resolve().parents[2]
OPERATORS = ["track_clip", "solve_camera", "create_empties", "create_point_cache", "attach_to_surface",
             "cancel", "set_floor", "set_origin", "set_scale", "export_tracks", "load_result",
             "detect_device", "pick_cursor"]

_CHILD = r"""
import json, os, sys, tempfile, time
d = tempfile.mkdtemp(); os.symlink(sys.argv[1], os.path.join(d, "worldtrack")); sys.path.insert(0, d)
import bpy
t0 = time.perf_counter()
import worldtrack
worldtrack.register(); worldtrack.register()
t_reg = time.perf_counter() - t0
ops = sorted(n for n in dir(bpy.types) if n.startswith("WORLDTRACK_OT_"))
pts = sorted(n for n in dir(bpy.types) if n.startswith("WORLDTRACK_PT_"))
heavy = [m for m in ("cv2", "onnxruntime", "scipy", "worldtrack.engine.trackfile",
                     "worldtrack.operators.build") if m in sys.modules]
props = hasattr(bpy.types.Scene, "worldtrack") and hasattr(bpy.types.MovieClip, "worldtrack")
worldtrack.unregister(); worldtrack.unregister()
left = [n for n in dir(bpy.types) if n.startswith("WORLDTRACK_")]
gone = not hasattr(bpy.types.Scene, "worldtrack")
worldtrack.register()
again = len([n for n in dir(bpy.types) if n.startswith("WORLDTRACK_OT_")])
worldtrack.unregister()
print("RESULT " + json.dumps(dict(ops=ops, pts=pts, heavy=heavy, props=props, left=left,
                                  gone=gone, again=again, t_reg=t_reg)))
"""


def test_register_unregister_twice_cheap():
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT)], capture_output=True, text=True,
                       timeout=120, env=env)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    res = json.loads(line[-1][7:])
    assert {f"WORLDTRACK_OT_{n}" for n in OPERATORS} <= set(res["ops"])
    assert {"WORLDTRACK_PT_clip_track", "WORLDTRACK_PT_view3d"} <= set(res["pts"])
    assert res["heavy"] == [], f"imported at register time: {res['heavy']}"
    assert res["props"] and res["gone"] and res["left"] == []
    assert res["again"] == len(res["ops"])
    assert res["t_reg"] < 2.0, f"register took {res['t_reg']:.2f} s"


def test_every_operator_polls_false_without_clip(scene):
    assert scene.active_clip is None
    for name in OPERATORS:
        op = getattr(bpy.ops.worldtrack, name)
        if name == "detect_device":
            assert op.poll()
            continue
        assert not op.poll(), name


def test_operators_are_undoable():
    for name in OPERATORS:
        cls = getattr(bpy.types, f"WORLDTRACK_OT_{name}")
        if name in ("track_clip", "load_result", "solve_camera", "create_empties", "create_point_cache", "attach_to_surface",
                    "set_floor", "set_origin", "set_scale", "export_tracks"):
            assert {"REGISTER", "UNDO"} <= set(cls.bl_options), name
        assert cls.__doc__, f"{name} needs a tooltip"


# ------------------------------------------------------------------------------- panel drawing
class LayoutRecorder:
    """Stands in for UILayout during draw(): every call must exist in UILayout's RNA, use only
    its keyword parameters, name real properties of real data and registered operators."""

    _FUNCS = bpy.types.UILayout.bl_rna.functions

    def __init__(self, calls):
        self.calls = calls

    def __setattr__(self, key, value):
        if key != "calls":
            assert key in bpy.types.UILayout.bl_rna.properties, f"UILayout has no attribute {key}"
        object.__setattr__(self, key, value)

    def __getattr__(self, name):
        assert name in self._FUNCS, f"UILayout has no function {name}"
        params = {p.identifier for p in self._FUNCS[name].parameters}

        def call(*args, **kw):
            bad = set(kw) - params
            assert not bad, f"{name}() got unknown parameters {bad}"
            if name in ("prop",):
                data, prop = args[0], args[1]
                assert prop in data.bl_rna.properties, f"{type(data).__name__} has no property {prop}"
            if name == "operator":
                mod, fn = args[0].split(".")
                assert getattr(getattr(bpy.ops, mod), fn).get_rna_type() is not None
            self.calls.append((name, args, kw))
            if name in ("row", "column", "box", "split", "column_flow", "grid_flow"):
                return LayoutRecorder(self.calls)
            return _OpProps() if name == "operator" else None

        return call


class _OpProps:
    pass


def _draw_all(context):
    calls = []
    for cls in [getattr(bpy.types, n) for n in dir(bpy.types) if n.startswith("WORLDTRACK_PT_")]:
        if hasattr(cls, "poll") and not cls.poll(context):
            continue
        # bpy Panel instances cannot be made without a region; draw through an unbound call.
        cls.draw(type("P", (), {"layout": LayoutRecorder(calls)})(), context)
    return calls


def test_panels_draw_in_every_state(scene, tmp_path, wt):
    from worldtrack.operators import jobs

    calls = _draw_all(bpy.context)  # no clip: only the 3D Viewport panel draws
    assert any("No active clip" in str(c) for c in calls)
    syn = wt_synth.make_trackdata(T=6)
    from engine.trackfile import save_trackfile

    p = save_trackfile(tmp_path / "r.npz", syn.data)
    clip = bpy.data.movieclips.load(str(wt_synth.write_video(tmp_path / "c.mp4", syn.data)))
    scene.active_clip = clip
    calls = _draw_all(bpy.context)
    assert any("Not tracked yet" in str(c) for c in calls)
    assert bpy.ops.worldtrack.load_result(filepath=str(p)) == {"FINISHED"}
    calls = _draw_all(bpy.context)
    assert any("Ground truth" in str(c) for c in calls)
    assert any("Group 0: " in str(c) for c in calls)        # the moving groups listed
    # While a job runs: progress + Cancel button.
    job = jobs.EngineJob([[sys.executable, "-c", "import time; time.sleep(30)"]], tmp_path / "cache", "k")
    jobs.JOBS[clip.name] = job.start()
    try:
        calls = _draw_all(bpy.context)
        assert any(c[0] == "operator" and c[1][0] == "worldtrack.cancel" for c in calls)
        assert bpy.ops.worldtrack.cancel.poll() and not bpy.ops.worldtrack.track_clip.poll()
    finally:
        job.cancel()
        job.wait(10)
        jobs.JOBS.pop(clip.name, None)
    # Preferences draw too.
    prefs_cls = wt.preferences.WorldtrackPreferences
    calls = []
    prefs_cls.draw(type("P", (), {"layout": LayoutRecorder(calls), "bl_rna": prefs_cls.bl_rna})(),
                   bpy.context)
    assert [c[1][1] for c in calls if c[0] == "prop"] == ["device", "precision", "cache_dir",
                                                          "memory_limit_gb"]


def test_load_result_rejects_bad_file(scene, tmp_path):
    syn = wt_synth.make_trackdata(T=6)
    clip = bpy.data.movieclips.load(str(wt_synth.write_video(tmp_path / "c.mp4", syn.data)))
    scene.active_clip = clip
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(RuntimeError, match="metadata"):
        bpy.ops.worldtrack.load_result(filepath=str(bad))
    assert clip.worldtrack.result_path == "" and "metadata" in clip.worldtrack.last_error


_ENABLE = r"""
import json, sys
import bpy, addon_utils
from importlib import import_module
name = "bl_ext.user_default.worldtrack"
addon_utils.enable(name, default_set=True, handle_error=None)
res = {"enabled": name in bpy.context.preferences.addons}
prefs = import_module(name + ".preferences")
p = prefs.get(bpy.context)
res["prefs"] = type(p).__name__
p.device = "CPU"
res["cache"] = str(import_module(name + ".operators.blscene").default_cache_dir())
res["heavy"] = [m for m in ("cv2", "onnxruntime", "scipy") if m in sys.modules]
res["detect"] = list(bpy.ops.worldtrack.detect_device())
res["detected"] = prefs.DETECTED.get("message", "")
addon_utils.disable(name, default_set=True)
res["left"] = [n for n in dir(bpy.types) if n.startswith("WORLDTRACK_")]
print("RESULT " + json.dumps(res))
"""


def test_enable_as_extension(tmp_path):
    """Enabled the way Blender does it (bl_ext.user_default.worldtrack, isolated user folders):
    real preferences, the extension's own cache folder, the device probe subprocess."""
    env = dict(os.environ)
    for var, sub in (("BLENDER_USER_EXTENSIONS", "ext"), ("BLENDER_USER_CONFIG", "cfg"),
                     ("BLENDER_USER_SCRIPTS", "scripts")):
        (tmp_path / sub).mkdir()
        env[var] = str(tmp_path / sub)
    (tmp_path / "ext" / "user_default").mkdir()
    (tmp_path / "ext" / "user_default" / "worldtrack").symlink_to(ROOT, target_is_directory=True)
    r = subprocess.run([sys.executable, "-c", _ENABLE], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=180)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert r.returncode == 0 and line, r.stderr[-3000:]
    res = json.loads(line[-1][7:])
    assert res["enabled"] and res["prefs"] == "WorldtrackPreferences"
    assert res["cache"].startswith(str(tmp_path / "ext")), res["cache"]
    assert res["heavy"] == []
    assert res["detect"] == ["FINISHED"] and res["detected"].startswith(("CPU", "CUDA")), res["detected"]
    assert "failed" not in res["detected"], res["detected"]
    assert res["left"] == []


def test_blender_version_matches_environment():
    """`make test` runs this folder twice: Blender 5.x (.venv) and 4.2 LTS (.venv42, with
    WORLDTRACK_BLENDER42=1); make sure each run really uses the Blender it claims."""
    if os.environ.get("WORLDTRACK_BLENDER42") == "1":
        assert bpy.app.version[:2] == (4, 2), bpy.app.version_string
    else:
        assert bpy.app.version >= (4, 4, 0), bpy.app.version_string
