"""Track stage: dense, long-range, occlusion-aware 2D tracking (see :mod:`.field` for the
algorithm and :mod:`.api` for the Python API)."""
from .api import DEFAULT_MAX_SIDE, TrackError, default_intrinsics, make_queries, track_clip
from .field import FieldSettings, Predictor
from .memory import MemoryLimitError

__all__ = ["DEFAULT_MAX_SIDE", "FieldSettings", "MemoryLimitError", "Predictor", "TrackError",
           "default_intrinsics", "make_queries", "track_clip"]
