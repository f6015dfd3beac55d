#!/usr/bin/env bash
# Regenerate the bundled demo clip (issue 2) with the ground-truth generator (issue 3).
# Run from anywhere; needs the project venv (bpy 5.0.1). Deterministic: same files every time
# (up to the H.264 encoder build). Takes a few minutes on 2 CPU cores.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
cd "$ROOT"
"$PY" -m benchmarks.generate --kind dynamic --seed 2 --size 320x240 --frames 32 --fps 24 \
    --samples 16 --queries 1024 --no-depth --out "$TMP/clip"
cp "$TMP/clip/clip.mp4" "$TMP/clip/gt.npz" "$ROOT/samples/sample/"
echo "wrote $ROOT/samples/sample/clip.mp4 and gt.npz"
