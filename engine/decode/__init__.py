"""Decode stage: stream frames from video files and image sequences (see :mod:`.footage`)."""
from .footage import (COLORSPACES, DecodeError, Footage, IMAGE_EXTS, VIDEO_EXTS, open_footage,
                      parse_frame_range, srgb_eotf, srgb_oetf, work_size_for)

__all__ = ["COLORSPACES", "DecodeError", "Footage", "IMAGE_EXTS", "VIDEO_EXTS", "open_footage",
           "parse_frame_range", "srgb_eotf", "srgb_oetf", "work_size_for"]
