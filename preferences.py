"""Add-on preferences: compute device, kernel precision, cache folder, memory limit."""
from __future__ import annotations

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

# The extension's package name (``bl_ext.<repo>.worldtrack`` when installed).
PACKAGE = __package__

# What the device probe found (filled by WORLDTRACK_OT_detect_device; not saved).
DETECTED: dict[str, str] = {}


class WorldtrackPreferences(bpy.types.AddonPreferences):
    bl_idname = PACKAGE

    device: EnumProperty(
        name="Device", default="AUTO",
        items=[("AUTO", "Automatic", "CUDA GPU when it works, otherwise CPU"),
               ("CUDA", "GPU (CUDA)", "NVIDIA GPU via onnxruntime-gpu; fails if CUDA is unusable"),
               ("CPU", "CPU", "Always the CPU")])
    precision: EnumProperty(
        name="Precision", default="AUTO",
        items=[("AUTO", "Automatic", "Float32 (float16 is not yet measured safe on a GPU)"),
               ("FP32", "Float32", "Full precision everywhere"),
               ("FP16", "Float16 (GPU)", "Less GPU memory for the per-pixel kernels; "
                                         "coordinates stay float32. On the CPU the engine "
                                         "runs float32 and says so")])
    cache_dir: StringProperty(
        name="Cache Folder", subtype="DIR_PATH", default="",
        description="Where tracking results are cached; empty: next to the .blend "
                    "(worldtrack_cache), or the user cache folder for unsaved files")
    memory_limit_gb: FloatProperty(name="Memory Limit", default=8.0, min=0.5, max=1024.0,
                                   description="Upper bound for the engine's working memory, GiB")

    def draw(self, context):
        layout = self.layout
        layout.prop(self, "device")
        row = layout.row()
        row.label(text="Detected: " + DETECTED.get("message", "not checked yet"))
        row.operator("worldtrack.detect_device", text="Check", icon="FILE_REFRESH")
        layout.prop(self, "precision")
        layout.prop(self, "cache_dir")
        layout.prop(self, "memory_limit_gb")


class _Defaults:
    device = "AUTO"
    precision = "AUTO"
    cache_dir = ""
    memory_limit_gb = 8.0


def get(context: bpy.types.Context | None = None):
    """The preferences, or defaults when the add-on is not enabled through Blender (tests)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(PACKAGE)
    return addon.preferences if addon is not None and addon.preferences is not None else _Defaults()


CLASSES = (WorldtrackPreferences,)
