"""Shared test setup: one private build cache per test run.

Every compiled module in the run lands in the same fresh cache directory, so
a Jacobian compiled by one test is reused by the others and the user's own
cache is never touched. Set SYMJAC_TEST_CACHE_DIR to keep the cache between
runs while developing.
"""

import os
import tempfile

import pytest

os.environ["SYMJAC_CACHE_DIR"] = os.environ.get("SYMJAC_TEST_CACHE_DIR") or tempfile.mkdtemp(prefix="symjac-tests-")

BACKENDS = ("numpy", "cython")


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param
