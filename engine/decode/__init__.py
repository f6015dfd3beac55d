"""Decode stage: stream frames from video files and image sequences (see :mod:`.footage`)."""
from .footage import (DecodeError, Footage, IMAGE_EXTS, VIDEO_EXTS, open_footage,
                      parse_frame_range, work_size_for)

__all__ = ["DecodeError", "Footage", "IMAGE_EXTS", "VIDEO_EXTS", "open_footage",
           "parse_frame_range", "work_size_for"]
