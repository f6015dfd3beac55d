"""Build the Worldtrack extension zip(s), one per platform, with Blender's own extension builder.

    python -m tools.build_extension [--out dist] [--platforms linux-x64,windows-x64,macos-arm64] [--gpu]

1. Downloads the exact wheels pinned in ``requirements/runtime.txt`` for CPython 3.11 (the Python of
   Blender 4.2–5.0) and each platform into ``wheels/`` (unmodified, as Blender requires).
2. Checks they are exactly the wheels ``blender_manifest.toml`` lists (a changed pin must be
   reflected in the manifest; the error says which lines to change).
3. Stages the source tree with a manifest restricted to the requested platforms and runs
   ``blender_ext.py build --split-platforms`` (the code behind ``blender --command extension build``,
   taken from the installed ``bpy`` module), which also validates the manifest against schema 1.0.0.

``--gpu`` builds the GPU variant instead (``onnxruntime-gpu`` replaces ``onnxruntime``; linux-x64 and
windows-x64 only), named ``worldtrack-<version>-<platform>-gpu.zip``. It needs the CUDA 12 and cuDNN 9
runtime libraries on the user's machine; without them Worldtrack falls back to the CPU and says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY_VERSION = "3.11"
# pip platform tags accepted per Blender platform (pip matches each tag exactly).
PLATFORM_TAGS = {
    "linux-x64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
                  "manylinux2014_x86_64"],
    "windows-x64": ["win_amd64"],
    "macos-arm64": [f"macosx_{v}_0_arm64" for v in (11, 12, 13, 14)],
}
GPU_PLATFORMS = ("linux-x64", "windows-x64")
STAGE_SKIP = {".git", ".venv", ".venv42", ".venv-typing", "dist", "demo_out", "bench_out",
              "bench_cache", ".pytest_cache", "__pycache__", ".whl", ".gl"}


class BuildError(RuntimeError):
    pass


def read_pins(path: Path = ROOT / "requirements" / "runtime.txt") -> list[str]:
    pins = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            if "==" not in line:
                raise BuildError(f"{path}: '{line}' is not pinned with ==")
            pins.append(line)
    return pins


def download_wheels(pins: list[str], platform: str, dest: Path) -> list[Path]:
    """Download each pinned wheel for ``platform`` into ``dest``; return the wheel paths."""
    dest.mkdir(parents=True, exist_ok=True)
    got = []
    for pin in pins:
        name, version = pin.split("==")
        norm = re.sub(r"[-_.]+", "_", name).lower()
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
               "--only-binary=:all:", "--python-version", PY_VERSION, "--implementation", "cp",
               "--dest", str(dest), pin]
        for tag in PLATFORM_TAGS[platform]:
            cmd += ["--platform", tag]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"no {platform} wheel for {pin} (Python {PY_VERSION}):\n{r.stderr[-2000:]}")
        tags = PLATFORM_TAGS[platform]
        match = [p for p in dest.glob("*.whl")
                 if p.name.lower().startswith(f"{norm}-{version}-")
                 and any(t in p.name for t in tags)]
        if not match:
            raise BuildError(f"pip reported success but no {platform} wheel for {pin} is in {dest}")
        got.append(sorted(match)[-1])
    return got


def manifest_wheels(manifest: dict) -> list[str]:
    return [w.removeprefix("./wheels/") for w in manifest.get("wheels", [])]


def _toml_list(items: list[str]) -> str:
    return "[\n" + "".join(f'  "{i}",\n' for i in items) + "]"


def stage_source(manifest_text: str, platforms: list[str], wheels: list[Path], gpu: bool) -> Path:
    """Copy the source tree to a temp dir with a manifest for exactly these platforms/wheels."""
    stage = Path(tempfile.mkdtemp(prefix="worldtrack-build-"))
    src = stage / "worldtrack"

    def ignore(d: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n in STAGE_SKIP}
        if Path(d) == ROOT / "wheels":
            skip |= {n for n in names if n.endswith(".whl")}
        return skip

    shutil.copytree(ROOT, src, ignore=ignore)
    (src / "wheels").mkdir(exist_ok=True)
    for w in wheels:
        shutil.copy2(w, src / "wheels" / w.name)
    text = re.sub(r"(?ms)^platforms\s*=\s*\[.*?\]", "platforms = " + _toml_list(platforms),
                  manifest_text, count=1)
    text = re.sub(r"(?ms)^wheels\s*=\s*\[.*?\]",
                  "wheels = " + _toml_list([f"./wheels/{w.name}" for w in wheels]), text, count=1)
    (src / "blender_manifest.toml").write_text(text)
    return src


def blender_ext_script() -> Path:
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("the bpy module is not installed; run `make setup` first")
    base = Path(list(spec.submodule_search_locations)[0])
    hits = sorted(base.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
    if not hits:
        raise BuildError(f"Blender's extension builder (blender_ext.py) not found under {base}")
    return hits[-1]


def build(out: Path, platforms: list[str], gpu: bool = False) -> list[Path]:
    """Build one zip per platform into ``out``; returns the zip paths."""
    manifest_text = (ROOT / "blender_manifest.toml").read_text()
    manifest = tomllib.loads(manifest_text)
    pins = read_pins()
    if gpu:
        pins = [p.replace("onnxruntime==", "onnxruntime-gpu==") for p in pins]
        bad = [p for p in platforms if p not in GPU_PLATFORMS]
        if bad:
            raise BuildError(f"onnxruntime-gpu has no wheels for {', '.join(bad)}")
    wheels_dir = ROOT / "wheels"
    wheels: list[Path] = []
    for plat in platforms:
        if plat not in PLATFORM_TAGS:
            raise BuildError(f"unknown platform {plat!r}; choose from {', '.join(PLATFORM_TAGS)}")
        print(f"[build] downloading wheels for {plat} ...", flush=True)
        wheels += download_wheels(pins, plat, wheels_dir)
    if not gpu:
        listed = set(manifest_wheels(manifest))
        unlisted = [w.name for w in wheels if w.name not in listed]
        if unlisted:
            raise BuildError("blender_manifest.toml does not list these pinned wheels (update its "
                             "'wheels' to match requirements/runtime.txt):\n  "
                             + "\n  ".join(unlisted))
    src = stage_source(manifest_text, platforms, wheels, gpu)
    out.mkdir(parents=True, exist_ok=True)
    try:
        tmp_out = src.parent / "out"
        tmp_out.mkdir()
        cmd = [sys.executable, str(blender_ext_script()), "build", "--source-dir", str(src),
               "--output-dir", str(tmp_out), "--split-platforms"]
        print("[build] " + " ".join(cmd[1:3]) + " ...", flush=True)
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise BuildError(f"Blender's extension build failed:\n{r.stdout}\n{r.stderr}")
        zips = []
        for z in sorted(tmp_out.glob("*.zip")):
            name = z.name.replace(".zip", "-gpu.zip") if gpu else z.name
            dst = out / name
            shutil.move(str(z), dst)
            zips.append(dst)
        if not zips:
            raise BuildError(f"the builder produced no zip:\n{r.stdout}")
    finally:
        shutil.rmtree(src.parent, ignore_errors=True)
    for z in zips:
        print(f"[build] {z} ({z.stat().st_size / 2**20:.1f} MiB)")
    return zips


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "dist")
    ap.add_argument("--platforms", default=None,
                    help="comma-separated subset of linux-x64,windows-x64,macos-arm64 "
                         "(default: all; with --gpu: linux-x64,windows-x64)")
    ap.add_argument("--gpu", action="store_true", help="build the onnxruntime-gpu variant")
    a = ap.parse_args(argv)
    plats = a.platforms.split(",") if a.platforms else list(GPU_PLATFORMS if a.gpu else PLATFORM_TAGS)
    try:
        build(a.out, plats, gpu=a.gpu)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
