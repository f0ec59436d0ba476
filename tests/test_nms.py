"""multibox.nms: greedy NMS keep masks on boxes whose IoUs are worked out by hand."""
import math

import numpy as np
import pytest
from mxnet import nd

from multibox import nms
from multibox.params import dmlc_float

pytestmark = pytest.mark.unit


def keep(class_id, boxes, threshold=.5, force_suppress=False):
    mask = nms.greedy_nms_keep(nd, nd.array([class_id]), nd.array([boxes]), threshold,
                               force_suppress)
    return mask.asnumpy()[0].tolist()


BOXES = [[0, 0, 1, 1],      # row 0
         [0, 0, 1, .5],     # IoU with row 0: .5 / (1 + .5 - .5) = .5
         [0, 0, 1, 1],      # identical to row 0, IoU 1
         [.5, 0, 1.5, 1],   # IoU with row 0: .5 / (1 + 1 - .5) = 1/3
         [0, 0, 1, 1]]      # does not take part (class -1)


def test_per_class_suppression_at_iou_equal_to_threshold():
    # row 1 (same class, IoU .5 >= .5) is suppressed; row 2 has another class; row 3 IoU 1/3
    assert keep([0, 0, 1, 0, -1], BOXES) == [1, 0, 1, 1, 0]


def test_force_suppress_crosses_classes():
    # now row 2 (class 1, IoU 1 with row 0) goes too
    assert keep([0, 0, 1, 0, -1], BOXES, force_suppress=True) == [1, 0, 0, 1, 0]


def test_threshold_just_above_the_iou_keeps_the_row():
    above = float(np.nextafter(np.float32(.5), np.float32(1)))
    assert keep([0, 0, 1, 0, -1], BOXES, threshold=above) == [1, 1, 1, 1, 0]


def test_suppressed_rows_do_not_suppress():
    # IoU(A, B) = .75 / 1.25 = .6, IoU(B, C) = .6, IoU(A, C) = .5 / 1.5 = 1/3:
    # A suppresses B; B, suppressed, cannot suppress C
    chain = [[0, 0, 1, 1], [.25, 0, 1.25, 1], [.5, 0, 1.5, 1]]
    assert keep([0, 0, 0], chain) == [1, 0, 1]


def test_zero_area_boxes_never_suppress():
    # two points at the same corner: intersection 0 and union 0, IoU taken as 0
    assert keep([0, 0], [[1, 1, 1, 1], [1, 1, 1, 1]]) == [1, 1]


def test_nan_threshold_suppresses_nothing():
    assert keep([0, 0, -1], BOXES[:3], threshold=math.nan) == [1, 1, 0]


def test_below_threshold_text_by_hand():
    # the float32 just below .5 is .5 - 2**-25 (the spacing below a power of two halves)
    text = nms.below_threshold_text(.5)
    assert dmlc_float(text) == .5 - 2 ** -25
