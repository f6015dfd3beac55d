"""Worldtrack benchmark: ground-truth clip generator, metrics and baselines (not shipped).

- :mod:`benchmarks.generate` renders random scenes with Blender (``bpy``) and writes exact answers
  as track files (``generate_clip``).
"""
