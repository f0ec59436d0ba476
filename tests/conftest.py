"""Shared helpers for the test suite (the native ops are the oracle here; the library never calls them).

Every test carries exactly one tier marker (``unit``, ``parity``, ``e2e``, see pytest.ini),
usually as a module-level ``pytestmark``; collection fails otherwise.
"""
import glob
import os
import shutil

import numpy as np
import pytest

from ssd.options import SHIPPED_EPOCH, SHIPPED_PREFIX

# The native mining probability equals F.softmax only with the default float32 accumulation.
os.environ.pop('MXNET_SAFE_ACCUMULATION', None)

TIERS = ('unit', 'parity', 'e2e')


def pytest_collection_modifyitems(config, items):
    """Refuse to run a suite in which some test has no tier marker, or more than one."""
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {tiers or 'no tier'}")
    if wrong:
        raise pytest.UsageError("every test needs exactly one tier marker out of "
                                f"{', '.join(TIERS)}:\n  " + "\n  ".join(wrong))


def assert_same(ours, native, context='', atol=0.0, rtol=0.0):
    """Whole-output comparison of ours with the native op's: bit-exact unless told otherwise.

    ``ours`` and ``native`` are arrays, or equally long sequences of arrays (the outputs of a
    multi-output op). Each pair must have the same shape, NaN at the same positions and the
    other values within ``atol + rtol * |native|`` (0: equal; -0.0 equals 0.0).
    """
    if isinstance(ours, (list, tuple)):
        assert isinstance(native, (list, tuple)) and len(ours) == len(native), \
            f"{len(ours)} outputs != native {len(native)} {context}"
        for index, (mine, theirs) in enumerate(zip(ours, native)):
            assert_same(mine, theirs, f"output {index} {context}", atol=atol, rtol=rtol)
        return
    ours, native = np.asarray(ours), np.asarray(native)
    assert ours.shape == native.shape, f"shape {ours.shape} != native {native.shape} {context}"
    assert np.array_equal(np.isnan(ours), np.isnan(native)), f"NaN positions differ {context}"
    np.testing.assert_allclose(ours, native, atol=atol, rtol=rtol, equal_nan=True,
                               err_msg=str(context))


@pytest.fixture
def rng():
    return np.random.RandomState(1234)


@pytest.fixture(scope='session')
def shipped_copy(tmp_path_factory):
    """The shipped checkpoint's prefix, copied to a temporary folder: what scripts write beside
    it (the ONNX cache, the precision-recall plot) stays out of models/."""
    folder = tmp_path_factory.mktemp('shipped')
    for path in glob.glob(f'{SHIPPED_PREFIX}-{SHIPPED_EPOCH:04d}.*'):
        shutil.copy(path, folder)
    return str(folder / os.path.basename(SHIPPED_PREFIX))
