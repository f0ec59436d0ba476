"""Exact orderings built from MXNet operators: stable sort keys, compaction, row scatter/gather.

MXNet's ``argsort``/``topk``/``sort`` are not stable on CPU for more than 16 elements
(docs/ops-semantics.md §8), so ties cannot be left to them. Instead every helper here works with
*distinct* keys or with explicit permutations, which any sort orders the same way.

All helpers take ``F`` (``mx.nd`` or ``mx.sym``) first and never read shapes, so they hybridize
and export. Shapes use ``B`` for the batch and ``N`` for the rows per batch item; index arrays
are float32 holding exact integers (exact below 2**24).
"""

__all__ = ['descending_key', 'row_index', 'axis_length', 'compacted_sources', 'gather_rows',
           'gather_columns']

# The tie-break added below a float32 score is scaled by 2**-24 twice: once so that it stays
# below half the float32 spacing around the score, once more per row index (N < 2**24).
_TIE_SCALE = 2.0 ** -24
# Gives zero (and denormal) scores a tie-break too; far below the float32 spacing near 0.
_TIE_FLOOR = 2.0 ** -200
# Scores above this (only +inf in practice) are clamped so that the key stays finite.
_KEY_CEILING = 1e300


def row_index(F, like):
    """Row numbers ``0..N-1`` of ``like`` (B, N), broadcast to (B, N) float32."""
    return F.broadcast_like(F.reshape(F.contrib.arange_like(like, axis=1), (1, -1)), like)


def axis_length(F, like, axis):
    """Length of axis ``axis`` of ``like`` as a ``(1,)`` float32 (exact below 2**24).

    Read from ``shape_array``: counting with ``sum(ones_like(...))`` costs a pass over the data
    and MXNet's slow reduction (~0.3 ms per (8, 8732) array).
    """
    length = F.slice_axis(F.shape_array(like), axis=0, begin=axis, end=axis + 1)
    return F.cast(length, dtype='float32')


def descending_key(F, scores, valid):
    """Distinct float64 keys whose descending order is the stable descending order of ``scores``.

    Parameters
    ----------
    scores : (B, N) float32, finite or +inf where ``valid``.
    valid : (B, N) 1/0 mask; invalid rows get key ``-inf`` (they sort last).

    Returns
    -------
    (B, N) float64 keys. Higher score first, equal scores in ascending row order.

    The key is ``s - (|s| * 2**-24 + 2**-200) * i * 2**-24`` in float64: the subtracted
    tie-break is below the gap from ``s`` to the next float32 score, so scores keep their
    order, and it grows with the row index ``i``, so ties resolve to the lower index. Every
    step is exact or rounds monotonically in float64, and consecutive keys of equal scores
    differ by about 16 float64 ulps, so no two keys collide.
    """
    score = F.minimum(F.cast(scores, dtype='float64'), _KEY_CEILING)
    # i * 2**-24 on one (1, N) row, broadcast by the product: one (B, N) pass fewer
    index = F.cast(F.contrib.arange_like(scores, axis=1), dtype='float64')
    tie = F.broadcast_mul(F.abs(score) * _TIE_SCALE + _TIE_FLOOR,
                          F.reshape(index * _TIE_SCALE, (1, -1)))
    key = score - tie
    minus_inf = F.ones_like(F.slice(key, begin=(0, 0), end=(1, 1))) * -float('inf')
    return F.where(valid, key, F.broadcast_like(minus_inf, key))


def compacted_sources(F, valid):
    """Where the valid rows come from when they are moved to the front, in order.

    Parameters
    ----------
    valid : (B, N) 1/0 float32 mask.

    Returns
    -------
    ``(sources, count)``: ``sources (B, N)`` float32, ``sources[b, r]`` is the flat row
    ``b * N + i`` of the ``r``-th valid row ``i`` of item ``b`` for ``r < V`` (``V`` = valid
    count of the item; positions ``r >= V`` hold the invalid rows, mask them), and ``count
    (B, 1)`` = ``V``.

    The inverse of a stable partition, as a scatter: valid row ``i`` writes its flat row into
    slot ``b * N + (valid rows up to i) - 1``, invalid row ``i`` into ``b * N + V + (invalid
    rows before i)``. The slots are a permutation of ``0..B*N-1``, which ``index_copy`` needs
    (distinct targets), so no spare block is needed.
    """
    count = F.cumsum(valid, axis=1)  # valid rows up to and including i
    total = F.slice_axis(count, axis=1, begin=-1, end=None)  # (B, 1)
    row = F.reshape(F.contrib.arange_like(valid, axis=1), (1, -1))
    first = F.broadcast_mul(F.reshape(F.contrib.arange_like(valid, axis=0), (-1, 1)),
                            F.reshape(axis_length(F, valid, 1), (1, 1)))  # b * N, (B, 1)
    back = F.broadcast_add(F.broadcast_sub(row, count), total)
    slots = F.broadcast_add(F.where(valid, count - 1, back), first)
    flat = F.reshape(F.broadcast_add(row, first), (-1, 1))
    sources = F.contrib.index_copy(flat, F.reshape(slots, (-1,)), flat)
    return F.reshape_like(sources, valid), total


def gather_rows(F, rows, index):
    """``out[b, k] = rows[b, index[b, k]]``; out-of-range indices are clipped (mask them).

    Parameters
    ----------
    rows : (B, N, K) values.
    index : (B, M) float32 row numbers into the same batch item.

    Returns
    -------
    (B, M, K).
    """
    row_count = F.reshape(axis_length(F, rows, 1), (1, 1))
    local = F.broadcast_minimum(index, row_count - 1)
    offset = F.broadcast_mul(F.reshape(F.contrib.arange_like(index, axis=0), (-1, 1)), row_count)
    flat_index = F.broadcast_add(local, offset)
    return F.take(F.reshape(rows, (-3, 0)), flat_index, axis=0)


def gather_columns(F, data, index):
    """``out[b, c, k] = data[b, c, index[b, k]]``; out-of-range indices are clipped (mask them).

    Parameters
    ----------
    data : (B, C, N) values.
    index : (B, K) float32 positions along the last axis of the same batch item.

    Returns
    -------
    (B, C, K).

    One ``take`` from the flattened data (``gather_nd`` is several times slower); the flat
    indices ``(b * C + c) * N + index`` are float64, exact for any size.
    """
    length = axis_length(F, data, 2)  # N, (1,)
    local = F.broadcast_minimum(index, F.reshape(length - 1, (1, 1)))
    row = F.cast(F.contrib.arange_like(F.slice_axis(data, axis=2, begin=0, end=1)), 'float64')
    start = F.broadcast_mul(row, F.reshape(F.cast(length, 'float64'), (1, 1, 1)))  # (B, C, 1)
    flat = F.broadcast_add(start, F.expand_dims(F.cast(local, 'float64'), axis=1))
    return F.take(F.reshape(data, (-1,)), flat)
