"""multibox.coder on boxes small enough to encode and decode by hand."""
import math

import numpy as np
import pytest
from mxnet import nd

from multibox import coder

pytestmark = pytest.mark.unit

UNIT_VARIANCES = (1.0, 1.0, 1.0, 1.0)


def test_encode_by_hand():
    anchors = nd.array([[[0, 0, .5, .5]]])    # aw = ah = .5, centre (.25, .25)
    boxes = nd.array([[[.25, 0, .75, 1]]])    # gw = .5, gh = 1, centre (.5, .5)
    # dx = ((.5 - .25) / .5) / v = .5 / v, dy likewise; dw = log(.5 / .5) = 0; dh = log(1 / .5)
    offsets = coder.encode(nd, anchors, boxes, UNIT_VARIANCES).asnumpy()
    np.testing.assert_allclose(offsets, [[[.5, .5, 0, math.log(2)]]], rtol=1e-6)
    # default variances divide by .1, .1, .2, .2: 5, 5, 0, log(2) / .2 = 3.4657359
    offsets = coder.encode(nd, anchors, boxes, (.1, .1, .2, .2)).asnumpy()
    np.testing.assert_allclose(offsets, [[[5, 5, 0, math.log(2) / .2]]], rtol=1e-6)


def test_decode_by_hand():
    anchors = nd.array([[[.2, .2, .6, .4]]])  # aw = .4, ah = .2, centre (.4, .3)
    offsets = nd.array([[[.5, -.5, 0, math.log(2)]]])
    # x = .5 * .4 + .4 = .6, y = -.5 * .2 + .3 = .2, half w = e^0 * .4 / 2 = .2,
    # half h = e^log2 * .2 / 2 = .2  ->  [.6 - .2, .2 - .2, .6 + .2, .2 + .2]
    boxes = coder.decode(nd, anchors, offsets, UNIT_VARIANCES).asnumpy()
    np.testing.assert_allclose(boxes, [[[.4, 0, .8, .4]]], rtol=1e-6, atol=1e-7)


def test_decode_inverts_encode():
    anchors = nd.array([[[0, 0, .5, .5], [.1, .2, .3, .9]]])
    boxes = nd.array([[[.25, 0, .75, 1], [.15, .25, .2, .5]], [[.1, .1, .2, .2], [0, 0, 1, 1]]])
    variances = (.1, .1, .2, .2)
    offsets = coder.encode(nd, anchors, boxes, variances)
    np.testing.assert_allclose(coder.decode(nd, anchors, offsets, variances).asnumpy(),
                               boxes.asnumpy(), rtol=1e-5, atol=1e-6)


def test_coordinate_major_layout_gives_the_same_values():
    anchors = nd.array([[[0, 0, .5, .5], [.1, .2, .3, .9]]])
    boxes = nd.array([[[.25, 0, .75, 1], [.15, .25, .2, .5]]])
    variances = (.1, .1, .2, .2)
    by_row = coder.encode(nd, anchors, boxes, variances)
    by_column = coder.encode(nd, anchors.transpose((0, 2, 1)), boxes.transpose((0, 2, 1)),
                             variances, axis=1)
    np.testing.assert_array_equal(by_column.transpose((0, 2, 1)).asnumpy(), by_row.asnumpy())
    decoded = coder.decode(nd, anchors.transpose((0, 2, 1)), by_column, variances, axis=1)
    np.testing.assert_array_equal(decoded.transpose((0, 2, 1)).asnumpy(),
                                  coder.decode(nd, anchors, by_row, variances).asnumpy())


def test_decode_does_not_clamp_the_size():
    # e^100 overflows float32: the native op gives an infinite box, and so do we
    boxes = coder.decode(nd, nd.array([[[0, 0, .5, .5]]]), nd.array([[[0, 0, 100, 0]]]),
                         UNIT_VARIANCES).asnumpy()
    assert boxes[0, 0, 0] == -np.inf and boxes[0, 0, 2] == np.inf
    np.testing.assert_allclose(boxes[0, 0, [1, 3]], [0, .5])


def test_split_corners():
    left, top, right, bottom = coder.split_corners(nd, nd.array([[[1, 2, 3, 4]]]))
    assert [x.asnumpy().tolist() for x in (left, top, right, bottom)] == [[[[1]]], [[[2]]],
                                                                         [[[3]]], [[[4]]]]
