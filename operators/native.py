"""Export tracks as native Blender tracks (markers in clip frames, normalised coordinates)."""
from __future__ import annotations

from typing import Sequence

import bpy
import numpy as np

from . import camera_math
from .blscene import frame_map


def export_native_tracks(clip: bpy.types.MovieClip, data, track_ids: Sequence[int],
                         prefix: str = "WT_") -> list[str]:
    """Copy tracks into ``clip.tracking.tracks`` as native Blender tracks, one marker per frame.

    Marker coordinates are normalised (origin bottom-left); frames are clip frames; markers at
    frames where the point is hidden are muted. Existing tracks of the same name are replaced.
    """
    fm = frame_map(data, clip)
    W, H = data.image_size
    tracks = clip.tracking.tracks
    names = []
    for tid in np.asarray(track_ids, np.int64):
        name = f"{prefix}{int(tid):07d}"
        xy = np.asarray(data.tracks_2d[tid], np.float64)
        vis = np.asarray(data.visible[tid], bool)
        ok = np.isfinite(xy).all(1)
        if not ok.any():
            continue
        co = camera_math.pixels_to_marker(xy, W, H)
        frames = np.flatnonzero(ok)
        cframes = [int(fm.clip_frame0 + t) for t in frames]
        tr = tracks.get(name)
        if tr is None:  # (the Python API cannot delete tracks, so an old one is reused)
            tr = tracks.new(name=name, frame=cframes[0])
        stale = {m.frame for m in tr.markers} - set(cframes)
        for t, cf in zip(frames, cframes):
            tr.markers.insert_frame(cf, co=tuple(co[t]))
        for cf in stale:
            tr.markers.delete_frame(cf)
        mutes = [not vis[m.frame - fm.clip_frame0] for m in tr.markers]
        tr.markers.foreach_set("mute", mutes)
        tr.select = False
        names.append(tr.name)
    return names
