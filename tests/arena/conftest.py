import pytest

from postgres import start_server  # tests/arena is on sys.path (rootdir-relative imports, no __init__)


@pytest.fixture(scope="session")
def postgres_url():
    yield from start_server()
