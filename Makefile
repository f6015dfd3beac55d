# Worldtrack — the two commands a new user needs are `make demo` and `make test` (see README.md).
PY ?= python3.11
VENV := .venv
VENV42 := .venv42
TORCH_WHEEL ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: setup setup42 demo test test-fast bench bench-quick build clean sample

# --- environments --------------------------------------------------------------------------
$(VENV)/.ready: requirements/dev.txt requirements/runtime.txt
	$(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip==24.3.1
	$(VENV)/bin/python -m pip install -q -r requirements/dev.txt
	# CPU build of torch (authoring/export of the ONNX kernels only; never a runtime dependency)
	$(VENV)/bin/python -m pip install -q $(TORCH_WHEEL)
	touch $@

$(VENV42)/.ready: requirements/blender42.txt requirements/runtime.txt
	$(PY) -m venv $(VENV42)
	$(VENV42)/bin/python -m pip install -q --upgrade pip==24.3.1
	$(VENV42)/bin/python -m pip install -q -r requirements/blender42.txt
	touch $@

setup: $(VENV)/.ready
setup42: $(VENV42)/.ready

# --- command 1: the main job on the bundled sample clip -------------------------------------
demo: setup
	$(VENV)/bin/python -m tools.demo --out demo_out

# --- command 2: the whole test suite (Blender 5.0 and 4.2 LTS) ------------------------------
test: setup setup42
	$(VENV)/bin/python -m pytest -q tests $(PYTEST_ARGS)
	WORLDTRACK_BLENDER42=1 $(VENV42)/bin/python -m pytest -q tests/blender $(PYTEST_ARGS)

test-fast: setup
	$(VENV)/bin/python -m pytest -q tests -m "not slow" $(PYTEST_ARGS)

# --- extension zips (downloads the pinned wheels into wheels/) ------------------------------
build: setup
	$(VENV)/bin/python -m tools.build_extension --out dist

# --- benchmark ------------------------------------------------------------------------------
bench: setup
	$(VENV)/bin/python -m benchmarks.run --suite full --real --out BENCHMARKS.md

bench-quick: setup
	$(VENV)/bin/python -m benchmarks.run --suite quick --out bench_out/BENCHMARKS.quick.md

# --- regenerate the bundled sample clip (deterministic) -------------------------------------
sample: setup
	bash samples/sample/generate.sh

clean:
	rm -rf dist demo_out bench_out wheels/*.whl
