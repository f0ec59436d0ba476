"""multibox.mining: background probability, negative counts and the selection, by hand."""
import math

import numpy as np
import pytest
from mxnet import nd

from multibox import mining

pytestmark = pytest.mark.unit


def test_background_prob_by_hand():
    # anchor 0: logits (0, log 3): m = log 3, s = e^-log3 + e^0 = 1/3 + 1, p0 = (1/3) / (4/3) = 1/4
    # anchor 1: logits (0, 0): p0 = 1 / 2; anchor 2: (2, -inf-like -100): p0 = 1 / (1 + e^-102) ~ 1
    logits = nd.array([[[0, 0, 2], [math.log(3), 0, -100]]])
    np.testing.assert_allclose(mining.background_prob(nd, logits).asnumpy(), [[.25, .5, 1]],
                               rtol=1e-6)


def test_background_prob_single_class_is_one():
    # C == 1: exp(x - x) / exp(x - x) = 1 for every anchor
    prob = mining.background_prob(nd, nd.array([[[-3, 0, 7.5]], [[1, 2, 3]]])).asnumpy()
    np.testing.assert_array_equal(prob, np.ones((2, 3)))


def test_count_per_row():
    assert mining.count(nd, nd.array([[1, 0, 1, 1], [0, 0, 0, 0]])).asnumpy().tolist() == [3, 0]


@pytest.mark.parametrize('ratio, expected', [
    (1.5, [1, 3]),   # int(1 * 1.5) = 1 <= 5 - 1; int(2 * 1.5) = 3 <= 5 - 2
    (10, [4, 3]),    # 10 and 20 capped at N - num_pos = 4 and 3
    (0.4, [0, 0]),   # int(0.4) = 0, int(0.8) = 0: no negatives
])
def test_num_negatives(ratio, expected):
    positive = nd.array([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0]])
    assert mining.num_negatives(nd, positive, ratio).asnumpy().tolist() == expected


def select(prob, candidate, num_neg):
    negative, shortage = mining.hard_negatives(nd, nd.array([prob]), nd.array([candidate]),
                                               nd.array([num_neg]))
    return negative.asnumpy()[0].tolist(), shortage.asnumpy()[0]


def test_hard_negatives_take_the_lowest_background_first_ties_by_index():
    prob = [.3, .1, .2, .1, .05]
    candidate = [1, 1, 1, 1, 0]  # anchor 4 (the lowest .05) is not a candidate
    # candidates ascending: .1 (anchor 1), .1 (anchor 3), .2 (anchor 2), .3 (anchor 0)
    assert select(prob, candidate, 2) == ([0, 1, 0, 1, 0], 0)
    assert select(prob, candidate, 1) == ([0, 1, 0, 0, 0], 0)  # the tie goes to anchor 1
    assert select(prob, candidate, 3) == ([0, 1, 1, 1, 0], 0)
    assert select(prob, candidate, 0) == ([0, 0, 0, 0, 0], 0)
    # 5 wanted, 4 candidates: the native CHECK failure, flagged as a shortage
    assert select(prob, candidate, 5)[1] == 1


def test_hard_negatives_beyond_the_topk_list():
    # num_neg > MINE_LIST takes the full-sort branch: distinct ascending probabilities i / 1000,
    # so the wanted count of negatives are exactly the first anchors
    count = mining.MINE_LIST + 88
    wanted = mining.MINE_LIST + 1
    prob = [i / 1000 for i in range(count)]
    negative, shortage = select(prob, [1] * count, wanted)
    assert negative == [1] * wanted + [0] * (count - wanted) and shortage == 0
