"""Shared helpers for the test suite (the native ops are the oracle here; the library never calls them)."""
import os

import numpy as np
import pytest

# The native mining probability equals F.softmax only with the default float32 accumulation.
os.environ.pop('MXNET_SAFE_ACCUMULATION', None)


def assert_same(ours, native, atol=0.0, rtol=0.0):
    """Whole-array comparison: same shape, same NaN positions, values within tolerance."""
    ours, native = np.asarray(ours), np.asarray(native)
    assert ours.shape == native.shape, f"shape {ours.shape} != native {native.shape}"
    assert np.array_equal(np.isnan(ours), np.isnan(native)), "NaN positions differ"
    np.testing.assert_allclose(ours, native, atol=atol, rtol=rtol, equal_nan=True)


@pytest.fixture
def rng():
    return np.random.RandomState(1234)
