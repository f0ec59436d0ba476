"""Hard negative mining of MultiBoxTarget (native CPU semantics: docs/ops-semantics.md §3.4,
step 4).

Candidates are non-positive anchors whose best IoU is below ``negative_mining_thresh``. They are
ranked by the softmax probability of class 0 (background), ascending -- the hardest negatives
first -- with ties broken by the lower anchor index (the native ``std::stable_sort``). The first
``num_neg`` become negatives. MXNet's ``sort``/``topk`` are not stable, so instead of sorting the
candidates we take the ``num_neg``-th smallest key ``t`` (a value, unambiguous whatever the tie
order) and select every candidate with key ``< t`` plus the first few with key ``== t`` in index
order (a cumulative sum).

The ``t`` of an image comes from ``topk`` of its ``MINE_LIST`` smallest keys when ``num_neg <=
MINE_LIST``, else from a full ``sort``. Both always run (no ``cond``: it would stop shape
inference), but the sort only sees the rows that need it; the other rows are constant and
std::sort over a constant row is ~10x cheaper than over a random one.

Shapes: ``cls_pred (B, C, N)`` logits, every per-anchor array ``(B, N)``, per-image ``(B,)``.
"""
from .classes import class_max

__all__ = ['background_prob', 'num_negatives', 'hard_negatives', 'count', 'MINE_LIST']

MINE_LIST = 512       # num_neg up to this uses topk; larger ones sort their whole row
_NOT_CANDIDATE = 2.0  # key of non-candidates: above every probability


def background_prob(F, cls_pred):
    """Softmax probability of class 0, ``(B, N)``, bit-equal to the native mining value.

    The native loop computes ``expf(x0 - m) / s`` with ``m`` the max over classes and ``s`` the
    float32 sum of ``expf(xk - m)`` in class order. ``F.exp`` is glibc's ``expf`` and the loop
    below adds in class order, so this is exact. ``F.softmax(axis=1)`` is exact too but several
    times slower (strided reduction), ``softmax(axis=-1)`` is fast but not exact (vectorised
    exp), and reductions over the class axis are slow in MXNet: hence one max pooling over the
    classes (the maximum is exact in any order; C <= CLASS_WINDOW // 2 + 1), then ``exp`` and
    ``cumsum`` (few large ops).
    A ``foreach`` running maximum gave the same values, but ``foreach`` inside large graphs bound
    by ``Module`` read stale inputs under MXNet 1.9.1's threaded engine, so it is avoided.
    """
    # class-major: subtracting along the leading axis and the cumsum beat the strided middle
    # axis by more than the transpose costs (20.7 vs 24.1 ms at 8 x 21 x 8732, loaded machine).
    # The gradient is stopped after the transpose: on the input itself it would be a copy.
    by_class = F.stop_gradient(F.transpose(cls_pred, axes=(1, 0, 2)))  # (C, B, N)
    # max pooling never returns NaN; the sign of a zero peak cannot change exp(x - peak)
    peak = F.reshape_like(class_max(F, F.reshape(by_class, (-4, 1, -1, -3))),
                          F.slice_axis(by_class, axis=0, begin=0, end=1))  # (1, B, N)
    shifted = F.exp(F.broadcast_sub(by_class, peak))
    # cumsum adds in class order like the native loop; its last row is the sum
    total = F.reshape(F.slice_axis(F.cumsum(shifted, axis=0), axis=0, begin=-1, end=None),
                      (-3, -2))
    return F.reshape(F.slice_axis(shifted, axis=0, begin=0, end=1), (-3, -2)) / total


def count(F, mask):
    """Ones per row of a 0/1 ``mask (B, N)``, ``(B,)``: a matrix product, exact below 2**24 and
    several times faster than MXNet's ``sum`` reduction."""
    ones = F.ones_like(F.reshape(F.slice_axis(mask, axis=0, begin=0, end=1), (-1, 1)))
    return F.reshape(F.dot(mask, ones), (-1,))


def num_negatives(F, positive, ratio):
    """``min(int(float32(num_pos) * ratio), N - num_pos)`` per image, ``(B,)`` float32."""
    num_pos = count(F, positive)
    total = count(F, F.ones_like(positive))
    # a float32 product of float32 operands, as the C++ `int = int * float`, then truncation
    return F.minimum(F.floor(num_pos * ratio), total - num_pos)


def _kth_smallest(F, key, index):
    """``key (B, N)`` row values at sorted position ``index (B,)``, ascending."""
    filler = F.tile(F.ones_like(F.slice_axis(key, axis=1, begin=0, end=1)) * _NOT_CANDIDATE,
                    reps=(1, MINE_LIST))
    smallest = F.topk(F.concat(key, filler, dim=1), axis=1, k=MINE_LIST, ret_typ='value',
                      is_ascend=True)  # the filler guarantees MINE_LIST columns
    from_list = F.pick(smallest, F.minimum(index, MINE_LIST - 1), axis=1)
    long_row = F.reshape(index >= MINE_LIST, (-1, 1))
    sortable = F.where(F.broadcast_like(long_row, key), key, F.ones_like(key) * _NOT_CANDIDATE)
    from_sort = F.pick(F.sort(sortable, axis=1), index, axis=1)
    return F.where(F.reshape(long_row, (-1,)), from_sort, from_list)


def hard_negatives(F, prob, candidate, num_neg):
    """Select negatives: returns ``(negative (B, N) 0/1, shortage (B,) 0/1)``.

    ``prob (B, N)`` background probability, ``candidate (B, N)`` 0/1, ``num_neg (B,)``.
    ``shortage`` marks images with fewer candidates than ``num_neg`` (native CHECK failure).
    """
    key = F.where(candidate, prob, F.ones_like(prob) * _NOT_CANDIDATE)
    wanted = num_neg > 0
    threshold = F.expand_dims(_kth_smallest(F, key, F.maximum(num_neg - 1, 0)), 1)
    harder = candidate * F.broadcast_lesser(key, threshold)
    tied = candidate * F.broadcast_equal(key, threshold)
    room = F.expand_dims(num_neg - count(F, harder), 1)
    first_tied = tied * F.broadcast_lesser_equal(F.cumsum(tied, axis=1), room)
    negative = F.broadcast_mul(harder + first_tied, F.expand_dims(wanted, 1))
    shortage = wanted * (count(F, candidate) < num_neg)
    return negative, shortage
