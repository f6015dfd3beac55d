"""Child process of test_install.py: install the built zip into a real (headless) Blender.

Run as ``python install_check.py ZIP``, with BLENDER_USER_EXTENSIONS / BLENDER_USER_CONFIG /
BLENDER_USER_SCRIPTS pointing at an empty temporary folder. Prints one JSON line ``RESULT {...}``
and exits non-zero on the first failed check (with the reason on stderr).
"""
import json
import os
import sys

EXPECTED_OPERATORS = ["WORLDTRACK_OT_track_clip", "WORLDTRACK_OT_solve_camera",
                      "WORLDTRACK_OT_create_empties", "WORLDTRACK_OT_create_point_cache",
                      "WORLDTRACK_OT_attach_to_surface"]
HEAVY = ("cv2", "onnxruntime", "scipy")
PKG = "worldtrack"
result: dict = {}


def check(cond, msg):
    if not cond:
        print(f"CHECK FAILED: {msg}", file=sys.stderr, flush=True)
        print("RESULT " + json.dumps(result), flush=True)
        sys.exit(1)


def main() -> None:
    zip_path = os.path.abspath(sys.argv[1])
    ext_root = os.environ["BLENDER_USER_EXTENSIONS"]
    import bpy  # noqa: E402  (the test venv's bpy; numpy as Blender would ship it)
    import numpy  # noqa: F401

    # Isolation: from here on, third-party modules may only come from the wheels that Blender
    # installs for the extension, never from the test venv that runs this script.
    sys.path[:] = [p for p in sys.path if "site-packages" not in p or p.startswith(ext_root)]
    for m in list(sys.modules):
        if m.split(".")[0] in HEAVY:
            del sys.modules[m]
    result["blender"] = bpy.app.version_string
    check(os.path.realpath(bpy.utils.user_resource("EXTENSIONS")).startswith(
        os.path.realpath(ext_root)), "user extensions folder is not isolated")

    ret = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                   enable_on_install=True)
    check(ret == {"FINISHED"}, f"install returned {ret}")
    mod_name = f"bl_ext.user_default.{PKG}"
    check(mod_name in bpy.context.preferences.addons, "extension not enabled after install")
    check(mod_name in sys.modules, "extension module not imported")
    missing = [n for n in EXPECTED_OPERATORS if not hasattr(bpy.types, n)]
    check(not missing, f"operators not registered: {missing}")
    panels = [n for n in dir(bpy.types) if n.startswith("WORLDTRACK_PT_")]
    check(len(panels) >= 2, f"expected Clip Editor and 3D Viewport panels, found {panels}")
    result["panels"] = panels
    result["operators"] = sorted(n for n in dir(bpy.types) if n.startswith("WORLDTRACK_OT_"))
    lazily = [m for m in HEAVY if m in sys.modules]
    check(not lazily, f"heavy modules imported at register time: {lazily}")

    # The engine works with the bundled wheels (and only them).
    import importlib
    engine = importlib.import_module(f"{mod_name}.engine")
    import cv2
    import onnxruntime
    import scipy
    for m in (cv2, onnxruntime, scipy):
        check(os.path.realpath(m.__file__).startswith(os.path.realpath(ext_root)),
              f"{m.__name__} imported from {m.__file__}, not from the bundled wheels")
    result["wheels"] = {m.__name__: m.__version__ for m in (cv2, onnxruntime, scipy)}
    tf = importlib.import_module(f"{mod_name}.engine.trackfile")
    check(tf.FORMAT_VERSION >= 1, "engine.trackfile not importable")
    try:
        rt = importlib.import_module(f"{mod_name}.engine.runtime")
    except ImportError:
        rt = None
    if rt is not None and hasattr(rt, "select_providers"):
        providers, message = rt.select_providers("auto")
        check("CPUExecutionProvider" in providers, f"no CPU provider: {providers}")
        result["providers"] = providers
        result["provider_message"] = message
        result["available_providers"] = onnxruntime.get_available_providers()
        if os.environ.get("WT_EXPECT_CUDA_FALLBACK"):
            # GPU build of onnxruntime on a machine without a usable CUDA: it lists the CUDA
            # provider, but Worldtrack must notice that CUDA cannot start and use the CPU.
            check("CUDAExecutionProvider" in onnxruntime.get_available_providers(),
                  "the GPU variant did not bundle onnxruntime-gpu")
            check(providers == ["CPUExecutionProvider"], f"no CPU fallback: {providers}")
            check("CUDA" in message, f"fallback message does not say why: {message!r}")
    # A real ONNX Runtime session on the shipped graphs, inside Blender, with the bundled wheel.
    ops = importlib.import_module(f"{mod_name}.engine.match.ops")
    kernels = ops.Kernels(device="auto")
    gray = numpy.random.default_rng(0).random((48, 64)).astype(numpy.float32)
    feats = numpy.asarray(kernels.features(gray))
    check(feats.size > 0 and numpy.isfinite(feats).all(), "feature kernel gave no finite output")
    result["feature_shape"] = list(feats.shape)
    result["engine_version"] = engine.__version__

    # Disable, then uninstall: everything goes away cleanly.
    bpy.ops.preferences.addon_disable(module=mod_name)
    check(mod_name not in bpy.context.preferences.addons, "still enabled after disable")
    left = [n for n in EXPECTED_OPERATORS if hasattr(bpy.types, n)]
    check(not left, f"operators still registered after disable: {left}")
    repo_index = next(i for i, r in enumerate(bpy.context.preferences.extensions.repos)
                      if r.module == "user_default")
    ret = bpy.ops.extensions.package_uninstall(repo_index=repo_index, pkg_id=PKG)
    check(ret == {"FINISHED"}, f"uninstall returned {ret}")
    pkg_dir = os.path.join(ext_root, "user_default", PKG)
    check(not os.path.exists(pkg_dir), f"{pkg_dir} left behind after uninstall")
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
