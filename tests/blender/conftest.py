"""Blender-layer test setup: the extension imported as the package ``worldtrack`` (through a
symlink, as Blender would import it as ``bl_ext.<repo>.worldtrack``) and registered once."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture(scope="session")
def wt(tmp_path_factory):
    """The registered extension package (``worldtrack``)."""
    bpy = pytest.importorskip("bpy")
    d = tmp_path_factory.mktemp("ext")
    (d / "worldtrack").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(d))
    import worldtrack

    worldtrack.register()
    yield worldtrack
    worldtrack.unregister()


@pytest.fixture
def scene(wt):
    """A clean scene: factory startup without objects, Worldtrack still registered."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    wt.register()  # idempotent; re-attaches properties if the reset dropped them
    return bpy.context.scene
