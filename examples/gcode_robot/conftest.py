"""The project's server fixture (tests/conftest.py), re-exported for the end-to-end test:
imported into the test module itself, a fixture's name would clash with its argument."""

from tests.conftest import make_server  # noqa: F401
