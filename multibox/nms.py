"""Greedy non-maximum suppression with MultiBoxDetection's native semantics, on ``box_nms``.

Native rule (docs/ops-semantics.md §4.3 step 7): rows are visited in sorted order; a row that is
still alive suppresses every later alive row of the same class (any class if
``force_suppress``) whose IoU with it is ``>= nms_threshold``; suppressed rows cannot suppress.

``F.contrib.box_nms`` runs the same greedy loop with the same float32 IoU arithmetic
(``w = min(r) - max(l)`` clamped at 0, ``i = w * h``, ``i / ((area_a + area_b) - i)``; for
every box pair where the two formulas could differ -- inverted, zero-area or NaN boxes -- the
intersection is 0 or the IoU is NaN, so neither op suppresses). Two differences are bridged here:

* it suppresses on ``IoU > overlap_thresh``: we pass the float32 just below ``nms_threshold``,
  written as a decimal that dmlc's float parser reads back exactly;
* it drops suppressed rows and compacts the survivors: each row carries its position as an
  extra column, and the survivors' positions are scattered back into a per-row mask.

Its own sort is stable, and the rows arrive already sorted, so a strictly decreasing synthetic
score keeps them in place.
"""
import math

import numpy as np

from .ordering import axis_length, row_index
from .params import dmlc_float

__all__ = ['below_threshold_text', 'greedy_nms_keep']


def below_threshold_text(nms_threshold):
    """Decimal text that dmlc parses to the float32 just below ``nms_threshold`` (a float32 > 0).

    ``IoU > below`` is then the same test as the native ``IoU >= nms_threshold``. For the few
    tiny values that no text reaches, ``'0'`` is returned (see the end of the function).
    """
    below = np.nextafter(np.float32(nms_threshold), np.float32(0))
    candidates = [np.format_float_positional(below, unique=True), repr(float(below))]
    candidates += ['%.*e' % (digits, float(below)) for digits in range(8, 18)]
    for text in candidates:
        if dmlc_float(text) == float(below):
            return text
    # Tiny values: dmlc's float32 exponent arithmetic rounds differently; search mantissas.
    mantissa, exponent = ('%.8e' % float(below)).split('e')
    base = int(mantissa.replace('.', ''))
    for step in range(1, 2000):
        for digits in (base - step, base + step):
            text = f"{digits}e{int(exponent) - 8}"
            if dmlc_float(text) == float(below):
                return text
    # Only below ~1e-37 (dmlc's parser cannot produce every denormal); "> 0" then differs
    # from the native ">= nms_threshold" only for IoUs in (0, nms_threshold).
    return '0'


def greedy_nms_keep(F, class_id, boxes, nms_threshold, force_suppress):
    """Mask of the rows that survive greedy NMS.

    Parameters
    ----------
    class_id : (B, K) float32 class of each row, rows in visiting (sorted) order; rows with
        ``class_id == -1`` do not take part (they must come last).
    boxes : (B, K, 4) float32 corner boxes of the rows.
    nms_threshold : float32 value in (0, 1] (or NaN: nothing is suppressed).
    force_suppress : suppress across classes.

    Returns
    -------
    (B, K) float32: 1 for participating rows that survive, 0 otherwise.
    """
    participating = class_id >= 0
    if math.isnan(nms_threshold):  # native `iou >= NaN` is never true
        return participating
    position = row_index(F, participating)
    # Strictly decreasing positive scores pin box_nms's (stable) order to the given order.
    order_score = F.expand_dims(1 / (position + 1), axis=2)
    data = F.concat(F.expand_dims(class_id, axis=2), order_score, boxes,
                    F.expand_dims(position, axis=2), dim=2)
    survivors = F.contrib.box_nms(
        data, overlap_thresh=below_threshold_text(nms_threshold), valid_thresh=0, topk=-1,
        coord_start=2, score_index=1, id_index=0, background_id=-1,
        force_suppress=bool(force_suppress), in_format='corner', out_format='corner')
    survivor_position = F.reshape(F.slice_axis(survivors, axis=2, begin=6, end=7), (0, 0))
    return _mark_positions(F, survivor_position)


def _mark_positions(F, positions):
    """(B, K) mask with 1 at the listed ``positions`` (B, K) of each row; -1 entries are padding.

    Implemented as a scatter of ones: every slot gets a distinct target -- listed positions go
    to ``0..K-1``, padding slots to a spare block ``K..2K-1`` that is cut off afterwards.
    """
    listed = positions >= 0
    spare = F.broadcast_add(row_index(F, positions), F.reshape(axis_length(F, positions, 1), (1, 1)))
    targets = F.where(listed, positions, spare)
    doubled = F.concat(positions, positions, dim=1)
    flat_targets = F.reshape(targets + _row_offset(F, doubled, positions), (-1,))
    ones = F.reshape(F.ones_like(positions), (-1, 1))
    marks = F.contrib.index_copy(F.reshape(F.zeros_like(doubled), (-1, 1)), flat_targets, ones)
    return F.slice_like(F.reshape_like(marks, doubled), positions, axes=(1,))


def _row_offset(F, doubled, positions):
    """``b * 2K`` for every element of ``positions`` (B, K), where ``doubled`` is (B, 2K)."""
    width = F.reshape(axis_length(F, doubled, 1), (1, 1))
    batch = F.reshape(F.contrib.arange_like(doubled, axis=0), (-1, 1))
    return F.broadcast_like(F.broadcast_mul(batch, width), positions)
