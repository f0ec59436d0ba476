"""multibox.ordering: stable keys, compaction and gathers on rows small enough to order by hand."""
import numpy as np
import pytest
from mxnet import nd

from multibox import ordering

pytestmark = pytest.mark.unit


def test_descending_key_orders_ties_by_row():
    scores = nd.array([[.5, .9, .5, .1, 0, 0]])
    valid = nd.array([[1, 1, 1, 0, 1, 1]])
    key = ordering.descending_key(nd, scores, valid).asnumpy()[0]
    # stable descending order of the valid rows: .9 (row 1), .5 (rows 0 then 2), 0 (rows 4, 5);
    # the invalid row 3 gets -inf and comes last
    assert list(np.argsort(-key, kind='stable')) == [1, 0, 2, 4, 5, 3]
    assert key[3] == -np.inf
    # key = s - (|s| * 2**-24 + 2**-200) * i * 2**-24 in float64: row 0 keeps .5 exactly,
    # row 2 is .5 - (2**-25 + 2**-200) * 2 * 2**-24, about .5 - 2**-48 (the scalars reach MXNet
    # as decimal text, so the tie-break may be off in its last bit: compare to 1e-12)
    assert key[0] == .5
    assert key[0] - key[2] == pytest.approx(2 ** -48, rel=1e-12, abs=0)
    # zero scores: only the 2**-200 floor separates them, still in row order (4 before 5):
    # -2**-200 * 4 * 2**-24 = -2**-222 and -2**-200 * 5 * 2**-24 = -1.25 * 2**-222
    assert key[4] == pytest.approx(-2 ** -222, rel=1e-12, abs=0)
    assert key[5] == pytest.approx(-1.25 * 2 ** -222, rel=1e-12, abs=0)

def test_compacted_sources_by_hand():
    valid = nd.array([[0, 1, 1, 0, 1], [1, 0, 0, 0, 1]])
    sources, count = ordering.compacted_sources(nd, valid)
    # item 0: valid rows 1, 2, 4 first, then the invalid 0, 3; item 1: flat rows 5 + i,
    # valid 5 + 0, 5 + 4, then the invalid 5 + 1, 5 + 2, 5 + 3
    np.testing.assert_array_equal(sources.asnumpy(), [[1, 2, 4, 0, 3], [5, 9, 6, 7, 8]])
    np.testing.assert_array_equal(count.asnumpy(), [[3], [2]])


def test_row_index_and_axis_length():
    np.testing.assert_array_equal(ordering.row_index(nd, nd.zeros((2, 3))).asnumpy(),
                                  [[0, 1, 2], [0, 1, 2]])
    np.testing.assert_array_equal(ordering.axis_length(nd, nd.zeros((2, 7, 3)), 1).asnumpy(), [7])


def test_gather_rows_clips_out_of_range_indices():
    rows = nd.array([[[1, 1], [2, 2], [3, 3]], [[4, 4], [5, 5], [6, 6]]])
    index = nd.array([[2, 0, 5], [1, 1, 0]])
    # item 0: rows 2, 0 and 5 -> clipped to the last row 2; item 1 indexes its own rows
    np.testing.assert_array_equal(ordering.gather_rows(nd, rows, index).asnumpy(),
                                  [[[3, 3], [1, 1], [3, 3]], [[5, 5], [5, 5], [4, 4]]])


def test_gather_columns():
    data = nd.array([[[0, 1, 2], [10, 11, 12]], [[20, 21, 22], [30, 31, 32]]])
    index = nd.array([[2, 0], [1, 9]])  # 9 is clipped to the last column, 2
    np.testing.assert_array_equal(ordering.gather_columns(nd, data, index).asnumpy(),
                                  [[[2, 0], [12, 10]], [[21, 22], [31, 32]]])
