"""Shared fixtures: the repo root on sys.path, the benchmark data directory, a private cache dir."""
import signal
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED_DATA = ROOT.parent / "shared" / "data"
# A suite started in the background (`make test &`, nohup, a CI runner without job control) inherits SIGINT
# ignored, and so would every stage it starts: Python then installs no KeyboardInterrupt and the Ctrl-C
# tests' signal is lost. A handler here becomes the default again in each child at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def data_dir() -> Path:
    """The shared benchmark data (../shared/data); tests that need all of it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not here")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def fresh_endpoint_registry():
    """What the executor learnt about endpoints (no n, no seed, no JSON mode) is process-wide and keyed by
    URL: a later test's server may get a port an earlier one had, so each test starts with none."""
    import executor
    for name in ("_NO_N", "_N_PROVEN", "_NO_SEED", "_NO_JSON_MODE"):
        getattr(executor, name).clear()
    yield
