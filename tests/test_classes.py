"""multibox.classes: class maxima by 1-D max pooling, on scores small enough to read."""
import numpy as np
import pytest
from mxnet import nd

from multibox import classes

pytestmark = pytest.mark.unit

FLT_MAX = float(np.finfo(np.float32).max)


def test_background_and_foreground_max_by_hand():
    # (B=1, C=3, N=3): per anchor, row 0 is class 0 and row 1 the max of classes 1 and 2;
    # anchor 2 has a NaN in class 1, which never wins: max(NaN, .3) -> .3
    scores = nd.array([[[.1, .5, .2], [.7, .2, np.nan], [.3, .1, .3]]])
    pooled = classes.background_and_foreground_max(nd, scores).asnumpy()
    # for C >= 3 'full' pooling adds a third window made of padding only (-FLT_MAX); the callers
    # read rows 0 and 1
    np.testing.assert_array_equal(pooled[:, :2], np.float32([[[.1, .5, .2], [.7, .2, .3]]]))


def test_single_class_has_no_foreground():
    # C == 1: no foreground class, the foreground row is the pooling start value -FLT_MAX
    pooled = classes.background_and_foreground_max(nd, nd.array([[[.4, .6]]])).asnumpy()
    np.testing.assert_array_equal(pooled, np.float32([[[.4, .6], [-FLT_MAX, -FLT_MAX]]]))


def test_class_max_over_all_classes():
    # anchor 0: max(.1, .7, .3) = .7; anchor 1: max(.5, .2, .9) = .9; anchor 2: NaN skipped
    scores = nd.array([[[.1, .5, np.nan], [.7, .2, -1], [.3, .9, -2]],
                       [[-5, 0, 1], [-6, 0, 1], [-7, -0.5, 1]]])
    np.testing.assert_array_equal(classes.class_max(nd, scores).asnumpy(),
                                  np.float32([[[.7, .9, -1]], [[-5, 0, 1]]]))
