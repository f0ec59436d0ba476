"""Exact orderings built from MXNet operators: stable sort keys, compaction, row scatter/gather.

MXNet's ``argsort``/``topk``/``sort`` are not stable on CPU for more than 16 elements
(SPEC-ops.md section 9), so ties cannot be left to them. Instead every helper here works with
*distinct* keys or with explicit permutations, which any sort orders the same way.

All helpers take ``F`` (``mx.nd`` or ``mx.sym``) first and never read shapes, so they hybridize
and export. Shapes use ``B`` for the batch and ``N`` for the rows per batch item; index arrays
are float32 holding exact integers (exact below 2**24).
"""

__all__ = ['descending_key', 'row_index', 'batch_index', 'compacted_sources', 'gather_rows',
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


def batch_index(F, like):
    """Batch numbers ``0..B-1`` of ``like`` (B, N), broadcast to (B, N) float32."""
    return F.broadcast_like(F.reshape(F.contrib.arange_like(like, axis=0), (-1, 1)), like)


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
    index = F.cast(row_index(F, scores), dtype='float64')
    tie = (F.abs(score) * _TIE_SCALE + _TIE_FLOOR) * (index * _TIE_SCALE)
    key = score - tie
    return F.where(valid, key, F.ones_like(key) * -float('inf'))


def compacted_sources(F, valid):
    """Where the valid rows come from when they are moved to the front, in order.

    Parameters
    ----------
    valid : (B, N) 1/0 float32 mask.

    Returns
    -------
    (B, N) float32: ``out[b, r]`` is the flat row ``b * N + i`` of the ``r``-th valid row ``i``
    of item ``b`` for ``r < V`` (``V`` = valid count of the item), -1 for ``r >= V``.

    The inverse of the compaction permutation, as a scatter: valid row ``i`` writes its flat row
    into slot ``b * N + (valid rows before i)``; invalid rows write into a spare block of
    ``B * N`` slots that is cut off (``index_copy`` needs distinct targets).
    """
    flat = F.reshape_like(F.contrib.arange_like(F.reshape(valid, (-1,))), valid)
    spare = F.broadcast_add(flat, F.reshape(F.sum(F.ones_like(valid)), (1, 1)))
    slots = F.where(valid, flat - row_index(F, valid) + F.cumsum(valid, axis=1) - 1, spare)
    canvas = F.reshape(F.zeros_like(F.concat(valid, valid, dim=1)) - 1, (-1, 1))
    column = F.reshape(flat, (-1, 1))
    sources = F.contrib.index_copy(canvas, F.reshape(slots, (-1,)), column)
    return F.reshape_like(F.slice_like(sources, column, axes=(0,)), valid)


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
    row_count = F.sum(F.ones_like(F.slice_axis(rows, axis=2, begin=0, end=1)), axis=(1, 2))
    last = F.reshape(row_count - 1, (-1, 1))
    local = F.broadcast_minimum(index, last)
    offset = F.broadcast_mul(F.reshape(F.contrib.arange_like(row_count), (-1, 1)),
                             F.reshape(row_count, (-1, 1)))
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
    length = F.sum(F.ones_like(F.slice(data, begin=(0, 0, None), end=(1, 1, None))))  # N, (1,)
    local = F.broadcast_minimum(index, F.reshape(length - 1, (1, 1)))
    row = F.cast(F.contrib.arange_like(F.slice_axis(data, axis=2, begin=0, end=1)), 'float64')
    start = F.broadcast_mul(row, F.reshape(F.cast(length, 'float64'), (1, 1, 1)))  # (B, C, 1)
    flat = F.broadcast_add(start, F.expand_dims(F.cast(local, 'float64'), axis=1))
    return F.take(F.reshape(data, (-1,)), flat)
