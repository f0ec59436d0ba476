"""Anchor <-> ground-truth matching of MultiBoxTarget: bipartite stage, then threshold stage.

Reproduces the native CPU op (docs/ops-semantics.md §3.4 steps 1-3) with standard MXNet operators
and no control flow (MXNet infers no shapes through ``while_loop``/``cond``, which legacy
``Symbol.bind``/``Module`` need). Works for ``F = mx.nd`` and ``F = mx.sym``; no shape is read.

Shapes and formats
------------------
* anchors ``(1, N, 4)`` and label boxes ``(B, M, 4)``: corner ``[xmin, ymin, xmax, ymax]``,
  normalized like each other (not checked).
* label classes ``(B, M)``: ``-1`` marks padding; the first ``-1`` row ends an image's gts.
* IoU matrix ``(M, B, N')``, gt-major: ``N' = N + NUM_PAD``;
  the matcher appends ``NUM_PAD`` point anchors ``[0, 0, 0, 0]`` (IoU 0 with everything) so that
  ``topk`` over anchors always has enough elements.
* anchor and gt indices are float32 (exact below 2**24); scatter indices are int64.
* candidate submatrix ``(B, R, M)``, ``R = M * LIST_SIZE`` rows: the anchors of every gt's list,
  ascending (repeats zeroed), against all gts; priorities float64, ``-inf`` for unusable pairs.

Why the IoU matrix never holds NaN
----------------------------------
The native op skips NaN IoUs (``iou > best`` is false) while ``argmax``/``topk`` would pick them.
A NaN IoU only arises from a box whose coordinates, width, height or area are not finite; such a
box can never have IoU > 0 with anything, so it is replaced by the point box ``[0, 0, 0, 0]``
(IoU +-0). That changes no decision: the box is never matched, never positive and stays a mining
candidate, exactly as with the native NaN. Rows after the first padding row are replaced too, so
invalid gts never win a comparison against a valid one.

Bipartite stage
---------------
Native: repeatedly take the globally largest IoU ``> 1e-6`` among free pairs (ties: lowest anchor,
then lowest gt). MXNet's standard ``bipartite_matching`` operator is exactly that greedy loop
(stable sort of the scores, ties in row-major order, strict ``> threshold``) but sorting all
``N x M`` pairs of an image is slow, so it runs on a candidate submatrix: the union of every
gt's ``LIST_SIZE`` best anchors (``topk`` over distinct float64 priorities, see
:func:`_priority`), sorted by anchor index so that row-major order is the native tie order,
against all gts, with the true IoUs.

The submatrix gives the native matching whenever each gt ends up matched to one of its own
``LIST_SIZE`` best anchors, or unmatched while its list's last IoU is ``<= 1e-6``: every pair
outside the lists then ranks below a pair the greedy loop took first. That always holds when an
image has at most ``LIST_SIZE`` valid gts (a gt can only lose its list's anchors to other gts).
Otherwise the image's matching may differ and :func:`match` flags it (``inexact``).

(A ``foreach`` over the label rows did the same greedy loop, but inside a large graph bound by
``Module`` MXNet 1.9.1's threaded engine let it read stale inputs from the previous batch; this
version has no control-flow operator.)

Threshold stage
---------------
Per anchor the first gt of largest IoU: ``argmax`` over the leading (gt) axis, which returns the
first maximum.

Limits: fewer than 2**23 anchors (float32 indices, float64 priorities).
"""
import numpy as np

from .coder import split_corners

__all__ = ['NUM_PAD', 'LIST_SIZE', 'valid_gts', 'malformed_padding', 'sanitize_boxes',
           'pad_anchors', 'iou_matrix', 'match']

MIN_IOU = float(np.float32(1e-6))  # native starts the bipartite search at float(1e-6), strict >
LIST_SIZE = 32                     # candidate anchors per gt
NUM_PAD = LIST_SIZE                # point anchors appended: topk always has enough anchors
_TIE_SCALE = 2.0 ** -48            # tie-break of the float64 priorities (see _priority)


def valid_gts(F, classes):
    """Valid-gt mask ``(B, M)`` (1 before the first class ``-1`` row) and that row's mask."""
    is_pad = classes == -1
    pads_so_far = F.cumsum(is_pad, axis=1)
    return pads_so_far == 0, is_pad * (pads_so_far == 1)


def malformed_padding(F, label, first_pad):
    """Per image 1 if its first padding row has a coordinate other than -1 (native CHECK)."""
    coords = F.slice_axis(label, axis=2, begin=1, end=5)
    bad_row = F.sum(coords != -1, axis=2) > 0
    return F.max(bad_row * first_pad, axis=1)


def sanitize_boxes(F, boxes, keep=None):
    """Replace boxes with non-finite width, height or area (and where ``keep`` is 0) by points.

    ``boxes`` ``(..., 4)`` corner; ``keep`` broadcastable to ``(..., 1)``. See module docstring.
    """
    left, top, right, bottom = split_corners(F, boxes)
    width, height = right - left, bottom - top
    area = width * height
    finite = (width - width == 0) * (height - height == 0) * (area - area == 0)
    if keep is not None:
        finite = F.broadcast_mul(finite, keep)
    # where, not a product: NaN * 0 would stay NaN; a point box has IoU +-0 with every box
    return F.where(F.broadcast_like(finite, boxes), boxes, F.zeros_like(boxes))


def pad_anchors(F, anchors):
    """``(1, N, 4)`` -> ``(1, N + NUM_PAD, 4)`` with point anchors appended."""
    pad = F.zeros_like(F.slice_axis(anchors, axis=1, begin=0, end=1))
    return F.concat(anchors, F.tile(pad, reps=(1, NUM_PAD, 1)), dim=1)


def iou_matrix(F, gt_boxes, anchors):
    """IoU ``(M, B, N')`` of sanitized gts ``(B, M, 4)`` and padded anchors ``(1, N', 4)``.

    ``box_iou`` equals the native IoU bit for bit (docs/ops-semantics.md §3.3).
    """
    by_gt = F.transpose(gt_boxes, axes=(1, 0, 2))
    return F.contrib.box_iou(by_gt, F.reshape(anchors, (-1, 4)), format='corner')


# ------------------------------------------------------------------------------------------
# candidate pairs

def _priority(F, values, anchors):
    """Float64 priorities of (IoU, anchor) pairs: IoU desc, then anchor asc.

    ``iou * (1 - anchor * 2**-48)``: consecutive anchors of one IoU differ by ``iou * 2**-48``,
    about 16 float64 ulps, so rounding keeps them distinct and ordered; the whole tie-break
    (< ``iou * 2**-25`` for anchors < 2**23) stays below half the gap to the next float32 IoU,
    so a key exceeds ``MIN_IOU`` iff its IoU does. Pairs of two gts with one anchor and one
    IoU get equal keys (``bipartite_matching`` then takes the lower gt, row-major order).
    """
    factor = 1 - F.cast(anchors, dtype='float64') * _TIE_SCALE
    return F.broadcast_mul(F.cast(values, dtype='float64'), factor)


def _lists(F, iou, valid):
    """Per gt its ``LIST_SIZE`` best anchors in exact priority order, and its last (floor) key.

    ``topk`` is not stable, so it runs on the distinct float64 priorities, not on the IoUs.
    Returns ``keys (B, M, K)`` float64 (``-inf`` for pairs that cannot match), ``anchors
    (B, M, K)`` and ``floor (B, M, 1)``: the last key (``-inf`` if that pair cannot match);
    every anchor outside the list ranks below it.
    """
    positions = F.reshape(F.contrib.arange_like(iou, axis=2), (1, 1, -1))
    keys, anchors = F.topk(_priority(F, iou, positions), axis=2, k=LIST_SIZE,
                           ret_typ='both')  # (M, B, K)
    keys, anchors = (F.transpose(x, axes=(1, 0, 2)) for x in (keys, anchors))
    anchors = F.cast(anchors, dtype='float32')  # exact below 2**24
    usable = F.broadcast_mul(keys > MIN_IOU, F.cast(F.expand_dims(valid, 2), dtype='float64'))
    keys = F.where(usable, keys, F.ones_like(keys) * -np.inf)
    return keys, anchors, F.slice_axis(keys, axis=2, begin=-1, end=None)


def _bipartite(F, iou, valid):
    """Greedy matching on the candidate submatrix: per gt ``(key, anchor)`` ``(B, M)`` and ``exact``.

    ``key`` is the matched pair's priority (``-inf`` if unmatched), ``anchor`` its anchor
    (-1 if unmatched), ``exact`` 1 where the submatrix provably gives the native answer.
    """
    keys, lists, floor = _lists(F, iou, valid)  # (B, M, K) priorities, anchors; (B, M, 1)
    rows = F.sort(F.reshape(lists, (0, -1)), axis=1)  # (B, R) candidate anchors, ascending
    repeated = rows == F.concat(F.slice_axis(rows, axis=1, begin=0, end=1) * 0 - 1,
                                F.slice_axis(rows, axis=1, begin=0, end=-1), dim=1)
    width = F.cast(F.slice_axis(F.shape_array(iou), axis=0, begin=2, end=3), dtype='float64')
    batch = F.reshape(F.cast(F.contrib.arange_like(rows, axis=0), dtype='float64'), (-1, 1))
    columns = F.broadcast_add(F.cast(rows, dtype='float64'), F.broadcast_mul(batch, width))
    scores = F.take(F.reshape(iou, (0, -1)), columns, axis=1)  # (M, B, R)
    usable = F.broadcast_mul(F.expand_dims(1 - repeated, 2), F.expand_dims(valid, 1))
    scores = F.transpose(scores, axes=(1, 2, 0)) * usable  # (B, R, M); a repeated anchor never matches
    _, row_of_gt = F.contrib.bipartite_matching(scores, threshold=MIN_IOU, is_ascend=False)  # (B, M)
    matched = row_of_gt >= 0
    flat_row = F.broadcast_add(F.maximum(row_of_gt, 0), F.broadcast_mul(
        F.reshape(F.contrib.arange_like(rows, axis=0), (-1, 1)),
        F.cast(F.slice_axis(F.shape_array(rows), axis=0, begin=1, end=2), dtype='float32')))
    anchor = F.take(F.reshape(rows, (-1,)), flat_row)  # (B, M)
    gt_index = F.broadcast_like(F.reshape(F.contrib.arange_like(flat_row, axis=1), (1, -1)), flat_row)
    value = F.pick(F.take(F.reshape(scores, (-3, 0)), flat_row), gt_index, axis=2)  # (B, M) IoU
    priority = _priority(F, value, anchor)
    matched64 = F.cast(matched, dtype='float64')
    key = F.where(matched64, priority, F.ones_like(priority) * -np.inf)
    floor = F.reshape(floor, (0, -1))
    exact = F.where(matched64, key >= floor, floor <= MIN_IOU)
    return key, F.where(matched, anchor, anchor * 0 - 1), exact


def threshold_match(F, iou):
    """Per anchor the first gt of largest IoU and that IoU, ``(B, N')`` each.

    ``argmax`` returns the first maximum like the native strict ``>`` scan; invalid gts have
    IoU +-0 and come after the valid ones, so they never win.
    """
    best_gt = F.argmax(iou, axis=0)
    return best_gt, F.pick(iou, best_gt, axis=0)


def match(F, iou, valid):
    """Bipartite and threshold matching of ``iou (M, B, N')`` with valid-gt mask ``(B, M)``.

    Returns ``(bipartite_gt, best_gt, best_iou, inexact)``: per anchor ``(B, N')`` the gt it
    is bipartite-matched to or -1, its first gt of largest IoU and that IoU; per image ``(B,)``
    1 where the bipartite stage may differ from the native one (see the module docstring).
    """
    key, anchor, exact = _bipartite(F, iou, valid)  # (B, M) each
    best_gt, best_iou = threshold_match(F, iou)
    by_gt = [F.expand_dims(F.transpose(x), 2) for x in (anchor, key > -np.inf)]  # (M, B, 1)
    gt = F.broadcast_like(F.reshape(F.contrib.arange_like(anchor, axis=1), (-1, 1, 1)), by_gt[0])
    bipartite_gt = _scatter_matches(F, gt, by_gt[0], F.cast(by_gt[1], dtype='float32'), best_iou)
    inexact = F.max(1 - F.cast(exact, dtype='float32'), axis=1)
    return bipartite_gt, best_gt, best_iou, inexact


def _scatter_matches(F, gt, anchor, matched, like_anchor_row):
    """Per anchor ``(B, N')`` the gt of the matched pair ``(gt, anchor, matched)`` ``(S, B, 1)``
    or -1. Unmatched steps write into a scratch tail of ``S * B`` slots (index_copy needs its
    target at least as long as its source)."""
    flat = F.reshape(F.ones_like(like_anchor_row) * -1, (-1,))
    scratch = F.reshape(F.ones_like(gt) * -1, (-1,))
    width = F.slice_axis(F.shape_array(like_anchor_row), axis=0, begin=1, end=2)  # int64
    rows = F.reshape(F.Cast(F.contrib.arange_like(gt, axis=1), dtype='int64'), (1, -1, 1))
    to_anchor = F.broadcast_add(F.broadcast_mul(rows, width), F.Cast(anchor, dtype='int64'))
    to_scratch = F.broadcast_add(F.size_array(like_anchor_row),
                                 F.Cast(F.reshape_like(F.contrib.arange_like(gt), gt),
                                        dtype='int64'))
    target = F.where(matched, to_anchor, to_scratch)  # int64 indices: exact
    scattered = F.contrib.index_copy(F.concat(flat, scratch, dim=0), F.reshape(target, (-1,)),
                                     F.reshape(gt, (-1,)))
    return F.reshape_like(F.slice_like(scattered, flat), like_anchor_row)
