"""Worldtrack engine: dense world-centric tracking and camera solving.

Pure Python on numpy/OpenCV/onnxruntime; never imports bpy. Stages, one sub-package each:
``decode`` (read footage) → ``match`` (dense correspondence kernels) → ``track`` (long-range
tracks) → ``solve`` (camera) → ``lift`` (world-centric 3D) → ``export`` (track file, caches).
"""
__version__ = "0.1.0"
