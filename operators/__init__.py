"""Worldtrack operators: thin wrappers around :mod:`.build` (plain functions usable from scripts).

Importing this package is cheap: heavy modules (numpy work, the engine) load inside ``execute``.
"""
from .object_ops import CLASSES as _OBJECT
from .scene_ops import CLASSES as _SCENE
from .track import CLASSES as _TRACK

CLASSES = _TRACK + _SCENE + _OBJECT
