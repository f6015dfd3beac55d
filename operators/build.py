"""Build Blender data from a track file: the plain-function API behind the operators.

Every function takes ``data``, an :class:`engine.trackfile.TrackData` (see ``load_trackfile``), and
works without an operator context (demo script, tests). Operators are thin wrappers around these.
Frame and space conventions: see :mod:`.blscene`. One module per job; this one gathers them.
"""
from __future__ import annotations

from .blscene import (COLLECTION_NAME, ROOT_NAME, TRACK_PROP, FrameMap, default_cache_dir,  # noqa: F401
                      ensure_collection, ensure_root, footage_base, frame_map, world_scale)
from .camera_build import build_camera, setup_scene_from_clip, write_tracking_camera  # noqa: F401
from .empties import create_empties  # noqa: F401
from .native import export_native_tracks  # noqa: F401
from .orient import (apply_world_correction, camera_centres, detect_ground_plane, floor_matrix,  # noqa: F401
                     local_to_world, set_floor, set_origin, set_scale)
from .pc2 import read_pc2, read_pc2_header, write_pc2  # noqa: F401
from .pointcache import VIS_BITS, create_point_cache_mesh  # noqa: F401
from .surface import attach_to_surface  # noqa: F401
