"""One call that builds the whole artist's scene from a track file (for the demo command).

Camera, empties for the most reliable tracks, the point-cache mesh, a CG cube attached to the
largest rigid moving object (if any; not the non-rigid group, whose tracks follow no one motion)
and a preview render over the footage.
"""
from __future__ import annotations

import time
from pathlib import Path

import bpy
import numpy as np

from . import build, selection


def add_marker_cube(scene: bpy.types.Scene, name: str, size: float, location) -> bpy.types.Object:
    """A small emissive orange cube (visible in a few-sample render)."""
    me = bpy.data.meshes.new(name)
    h = size / 2
    verts = [(x, y, z) for x in (-h, h) for y in (-h, h) for z in (-h, h)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    me.from_pydata(verts, [], faces)
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    nt = mat.node_tree
    em = nt.nodes.new("ShaderNodeEmission")
    em.inputs["Color"].default_value = (1.0, 0.35, 0.05, 1.0)
    out = next(n for n in nt.nodes if n.type == "OUTPUT_MATERIAL")
    nt.links.new(em.outputs[0], out.inputs["Surface"])
    me.materials.append(mat)
    ob = bpy.data.objects.new(name, me)
    build.ensure_collection(scene).objects.link(ob)
    ob.location = location
    return ob


def build_demo_scene(scene: bpy.types.Scene, clip: bpy.types.MovieClip | None, data,
                     out_dir: str | Path, n_empties: int = 40, preview_png: str | Path | None = None,
                     samples: int = 8) -> dict:
    """Build everything; returns a summary (object names, counts, timings in seconds)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t: dict[str, float] = {}
    summary: dict = {"timings_s": t}

    t0 = time.perf_counter()
    cam = build.build_camera(scene, clip, data)
    t["camera"] = time.perf_counter() - t0
    summary["camera"] = cam.name

    t0 = time.perf_counter()
    ids = selection.most_reliable(data, n_empties, spread_px=selection.frame_spread_px(data, n_empties))
    coll = build.create_empties(scene, data, ids, clip=clip)
    t["empties"] = time.perf_counter() - t0
    summary["empties"] = len(coll.objects)

    t0 = time.perf_counter()
    pts = build.create_point_cache_mesh(scene, data, None, out_dir / "points.pc2", clip=clip)
    t["point_cache"] = time.perf_counter() - t0
    summary["points"] = len(pts.data.vertices)

    fm = build.frame_map(data, clip)
    moving = selection.rigid_groups(data)
    if moving:
        g = moving[0]
        region = np.flatnonzero(np.asarray(data.group) == g)
        t_ref = 0
        X = np.asarray(data.tracks_3d[region, t_ref], np.float64) * build.world_scale(scene)
        ok = np.isfinite(X).all(1) & np.asarray(data.visible[region, t_ref])
        if ok.sum() >= 3:
            t0 = time.perf_counter()
            scene.frame_set(fm.scene_frame0 + t_ref)
            centre = build.local_to_world(scene, np.median(X[ok], axis=0)[None])[0]
            size = 0.5 * float(np.median(np.linalg.norm(X[ok] - np.median(X[ok], 0), axis=1))) or 0.1
            cube = add_marker_cube(scene, "Worldtrack CG", size, centre)
            emp = build.attach_to_surface(scene, data, region, [cube], ref_frame=t_ref, clip=clip)
            t["attach"] = time.perf_counter() - t0
            summary["surface"] = {"empty": emp.name, "object": cube.name, "group": int(g),
                                  "tracks": int(len(region))}
    if preview_png is not None:
        from .preview import render_preview

        t0 = time.perf_counter()
        frame = fm.scene_frame0 + data.n_frames // 2
        render_preview(scene, preview_png, frame=frame, clip=clip, samples=samples)
        t["render"] = time.perf_counter() - t0
        summary["preview"] = str(preview_png)
    scene.frame_set(fm.scene_frame0)
    return summary
