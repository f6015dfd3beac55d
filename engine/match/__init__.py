"""Match stage: dense correspondence kernels.

The per-pixel kernels (descriptors, local cost volumes, scoring, warping, Lucas-Kanade polish)
are authored in torch in :mod:`.kernels_torch` (imported only by ``python -m
engine.match.export``, which rewrites the committed graphs in ``onnx/``) and executed with
onnxruntime by the numpy glue in :mod:`.ops`.
"""
