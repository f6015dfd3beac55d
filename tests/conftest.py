"""Shared test setup: the repository root is importable (``engine``, ``benchmarks``, ``tools``)."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("WORLDTRACK_SHARED", ROOT.parent / "shared"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    # Heavy checks are opt-in: they run only when the -m expression names "slow".
    if "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: opt in with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (licensed real footage); tests using it skip cleanly when it is absent."""
    d = SHARED / "data"
    if not d.is_dir():
        pytest.skip(f"shared data not found at {d}")
    return d
