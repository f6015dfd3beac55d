"""Worldtrack: dense world-centric point tracking and camera solving for Blender.

The extension's metadata lives in ``blender_manifest.toml`` (no ``bl_info``). Registering is cheap
and idempotent: it imports only the Blender layer (no cv2 / onnxruntime / engine work), and
registering or unregistering twice in a session is harmless.
"""
from __future__ import annotations

import bpy

from . import preferences, properties
from .operators import CLASSES as _OPERATORS
from .panels import CLASSES as _PANELS

#: Every class, in registration order (property groups before the operators that use them).
CLASSES = properties.CLASSES + preferences.CLASSES + _OPERATORS + _PANELS


def _is_registered(cls) -> bool:
    return getattr(cls, "is_registered", False)


def register() -> None:
    for cls in CLASSES:
        if _is_registered(cls):
            continue
        bpy.utils.register_class(cls)
    properties.attach()


def unregister() -> None:
    from .operators import jobs

    for job in list(jobs.JOBS.values()):  # never leave an engine process running
        job.cancel()
    jobs.JOBS.clear()
    properties.detach()
    for cls in reversed(CLASSES):
        if _is_registered(cls):
            bpy.utils.unregister_class(cls)
