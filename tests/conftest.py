import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))


@pytest.fixture(scope="session")
def default_cache(tmp_path_factory):
    """One trained embedded default per test session (shared cache dir)."""
    import os

    cache = os.environ.get("PELA_EXPORT_CACHE")
    return Path(cache) if cache else tmp_path_factory.mktemp("pela-cache")
