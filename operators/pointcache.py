"""Point-cache mesh: one vertex per track, a PC2 file and a Mesh Cache modifier."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import bpy
import numpy as np

from . import pc2
from .blscene import clip_or_active, parent_to_root, ensure_collection, ensure_root, frame_map, world_scale

VIS_BITS = 32  # frames per visibility bit-mask attribute of the point-cache mesh


def pc2_chunks_with_first(data, ids: np.ndarray, scale: float, first: np.ndarray,
                          chunk: int = 65536) -> Iterable[tuple[slice, np.ndarray]]:
    """:func:`pc2.track_position_chunks` scaled to Blender units; stores frame 0 into ``first``."""
    tf = np.diag([scale, scale, scale, 1.0])
    for sl, pos in pc2.track_position_chunks(data.tracks_3d, ids, tf, chunk):
        first[sl] = pos[0]
        yield sl, pos


def create_point_cache_mesh(scene: bpy.types.Scene, data, track_ids: Sequence[int] | None,
                            pc2_path: str | Path, clip: bpy.types.MovieClip | None = None,
                            name: str = "Worldtrack Points", chunk: int = 65536) -> bpy.types.Object:
    """One mesh with a vertex per track, animated by a Mesh Cache modifier reading ``pc2_path``.

    Point attributes: ``Col`` (footage colour, byte colour), ``track_id``, ``group``,
    ``confidence`` (mean over frames) and visibility bit masks ``visible_<k>`` (INT; bit j set when
    the point is seen at track-file frame 32k + j). Memory stays bounded by ``chunk`` tracks.
    Returns the mesh object; ``ob["worldtrack_timings"]`` holds the measured seconds.
    """
    import time

    clip = clip_or_active(scene, clip)
    fm = frame_map(data, clip)
    s = world_scale(scene)
    ids = np.arange(data.n_tracks) if track_ids is None else np.sort(np.asarray(track_ids, np.int64))
    n, T = len(ids), data.n_frames
    timings = {}

    t0 = time.perf_counter()
    first = np.zeros((n, 3), np.float32)
    pc2_path = Path(pc2_path)
    pc2.write_pc2(pc2_path, pc2_chunks_with_first(data, ids, s, first, chunk), n, T,
                  start=float(fm.scene_frame0), sampling=1.0)
    timings["write_pc2_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    old = bpy.data.objects.get(name)
    if old is not None and old.type == "MESH":
        old_mesh = old.data
        bpy.data.objects.remove(old)
        if old_mesh.users == 0:
            bpy.data.meshes.remove(old_mesh)
    me = bpy.data.meshes.new(name)
    me.vertices.add(n)
    me.vertices.foreach_set("co", first.ravel())
    _point_attributes(me, data, ids, chunk)
    me.update()
    ob = bpy.data.objects.new(name, me)
    coll = ensure_collection(scene)
    coll.objects.link(ob)
    parent_to_root(ob, ensure_root(scene))
    mod = ob.modifiers.new("Worldtrack Cache", "MESH_CACHE")
    mod.cache_format = "PC2"
    mod.filepath = bpy.path.relpath(str(pc2_path)) if bpy.data.filepath else str(pc2_path)
    mod.time_mode = "FRAME"
    mod.play_mode = "SCENE"
    mod.deform_mode = "OVERWRITE"
    mod.interpolation = "LINEAR"
    mod.forward_axis, mod.up_axis = "POS_Y", "POS_Z"
    # Cache sample index = scene frame * frame_scale - frame_start.
    mod.frame_start = float(fm.scene_frame0)
    mod.frame_scale = 1.0
    timings["mesh_s"] = time.perf_counter() - t0
    ob["worldtrack_timings"] = timings
    return ob


def _point_attributes(me: bpy.types.Mesh, data, ids: np.ndarray, chunk: int) -> None:
    n, T = len(ids), data.n_frames
    col = me.color_attributes.new("Col", "BYTE_COLOR", "POINT")
    rgba = np.ones((n, 4), np.float32)
    if data.colors is not None:
        rgba[:, :3] = np.asarray(data.colors[ids], np.float32) / 255.0
    else:
        rgba[:, :3] = 0.5
    col.data.foreach_set("color_srgb", rgba.ravel())
    me.attributes.new("track_id", "INT", "POINT").data.foreach_set("value", ids.astype(np.int32))
    grp = np.asarray(data.group[ids], np.int32) if data.group is not None else np.full(n, -1, np.int32)
    me.attributes.new("group", "INT", "POINT").data.foreach_set("value", grp)
    conf = np.empty(n, np.float32)
    words = np.zeros(((T + VIS_BITS - 1) // VIS_BITS, n), np.uint32)
    bit = (np.uint32(1) << np.arange(VIS_BITS, dtype=np.uint32))
    for s in range(0, n, chunk):
        sel = ids[s:s + chunk]
        conf[s:s + len(sel)] = np.asarray(data.confidence[sel]).mean(1)
        vis = np.asarray(data.visible[sel], bool)
        for k in range(words.shape[0]):
            v = vis[:, k * VIS_BITS:(k + 1) * VIS_BITS]
            words[k, s:s + len(sel)] = (v * bit[:v.shape[1]]).sum(1, dtype=np.uint64).astype(np.uint32)
    me.attributes.new("confidence", "FLOAT", "POINT").data.foreach_set("value", conf)
    for k in range(words.shape[0]):
        me.attributes.new(f"visible_{k}", "INT", "POINT").data.foreach_set("value", words[k].view(np.int32))
