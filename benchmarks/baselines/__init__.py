"""Baseline trackers and camera solvers, run side by side with Worldtrack by the harness.

Every baseline reads a clip folder (``frames/00000.png`` …, or ``clip.mp4``) and the query points
(``(N, 3)`` ``[t, x, y]``, float32, OpenCV pixels) and writes a valid track file
(``engine/trackfile.py``). Run one with::

    python -m benchmarks.baselines METHOD CLIP_DIR --queries Q.npy --out X.npz [--focal PX]

Methods (:data:`METHODS`): ``dis`` (OpenCV DIS optical flow, chained), ``lk`` (pyramidal
Lucas–Kanade, chained), ``cv_camera`` (OpenCV essential matrix + PnP camera solve, LK tracks
lifted to static 3D), ``libmv`` (Blender's own tracker and solver through ``bpy``).
"""
from __future__ import annotations

#: method name -> module (imported lazily: each needs cv2 or bpy)
METHODS = {
    "dis": "benchmarks.baselines.opencv_dis",
    "lk": "benchmarks.baselines.opencv_lk",
    "cv_camera": "benchmarks.baselines.opencv_camera",
    "libmv": "benchmarks.baselines.libmv",
}
