import pytest


@pytest.fixture(scope="session", autouse=True)
def _test_env():
    """PDF rendering is pure (bytes in, bytes out): no database or Redis for these tests.

    Overrides the autouse session fixture of tests/conftest.py for this folder only.
    """
    yield
