"""Anchor <-> ground-truth matching of MultiBoxTarget: bipartite stage, then threshold stage.

Reproduces the native CPU op (SPEC-ops.md section 3.4 steps 1-3) with standard MXNet operators
and one ``F.contrib.foreach`` (no ``while_loop``/``cond``: MXNet infers shapes through
``foreach`` only, and legacy ``Symbol.bind``/``Module`` need them). Works for ``F = mx.nd`` and
``F = mx.sym``; no shape is read.

Shapes and formats
------------------
* anchors ``(1, N, 4)`` and label boxes ``(B, M, 4)``: corner ``[xmin, ymin, xmax, ymax]``,
  normalized like each other (not checked).
* label classes ``(B, M)``: ``-1`` marks padding; the first ``-1`` row ends an image's gts.
* IoU matrix ``(M, B, N')``, gt-major so that ``foreach`` walks the gts: ``N' = N + NUM_PAD``;
  the matcher appends ``NUM_PAD`` point anchors ``[0, 0, 0, 0]`` (IoU 0 with everything) so that
  ``topk`` over anchors always has enough elements.
* anchor and gt indices are float32 (exact below 2**24); scatter indices are int64.
* candidate pairs ``(B, P)``, ``P = M * LIST_SIZE + M``: per gt its list, then one sentinel
  per gt; priorities float64, ``-inf`` for dead pairs.

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
then lowest gt). Here each image keeps a pool of candidate pairs with float64 priorities that
encode that order (:func:`_priority`); one ``foreach`` step per label row takes the best live
pair of every image and kills the other pairs of its gt and of its anchor. An image has at most
``M`` gts, so ``M`` steps always suffice; later steps find nothing and change nothing.

The pool holds each gt's ``LIST_SIZE`` best anchors (``topk`` over the IoU row). A gt whose
list might miss anchors that can still match (its last entry has IoU > 1e-6) also gets a
*sentinel* ranked just below its last trusted entry: once every pair above the sentinel is
gone, the order among the remaining pairs is unknown, so reaching a live sentinel stops the
image (all later steps are no-ops for it). Every pair taken before that is a pair of the native
matching. A sentinel is reached only if all of the gt's list was taken by other gts first: that
needs at least ``LIST_SIZE`` other valid gts in the image, all better matches for the gt's best
anchors. Otherwise -- in particular whenever an image has at most ``LIST_SIZE`` valid gts --
the bipartite stage equals the native one bit for bit. When it stops, the image keeps the pairs
found so far (never a wrong pair; the remaining gts get no bipartite anchor) and :func:`match`
flags it (``inexact``). ``topk`` is not stable, so it runs on the float64 priorities, which
are distinct within a row.

Threshold stage
---------------
Per anchor the first gt of largest IoU: ``argmax`` over the leading (gt) axis, which returns the
first maximum. (A running maximum inside the ``foreach`` costs about as much, single-threaded,
and adds ~80 small operators to the loop.)

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

    ``box_iou`` equals the native IoU bit for bit (SPEC-ops.md section 3.3).
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
    IoU get equal keys (the lower gt wins: see :func:`_greedy_step`).
    """
    factor = 1 - F.cast(anchors, dtype='float64') * _TIE_SCALE
    return F.broadcast_mul(F.cast(values, dtype='float64'), factor)


def _lists(F, iou, valid):
    """Per gt its ``LIST_SIZE`` best anchors in exact priority order, and its sentinel key.

    ``topk`` is not stable, so it runs on the distinct float64 priorities, not on the IoUs.
    Returns ``keys (B, M, K)`` float64 (``-inf`` for pairs that cannot match), ``anchors
    (B, M, K)`` and ``sentinel (B, M, 1)``: the last key if that pair could match (pairs
    beyond the list rank below it and might match too), else ``-inf``.
    """
    positions = F.reshape(F.contrib.arange_like(iou, axis=2), (1, 1, -1))
    keys, anchors = F.topk(_priority(F, iou, positions), axis=2, k=LIST_SIZE,
                           ret_typ='both')  # (M, B, K)
    keys, anchors = (F.transpose(x, axes=(1, 0, 2)) for x in (keys, anchors))
    usable = F.broadcast_mul(keys > MIN_IOU, F.cast(F.expand_dims(valid, 2), dtype='float64'))
    keys = F.where(usable, keys, F.ones_like(keys) * -np.inf)
    return keys, anchors, F.slice_axis(keys, axis=2, begin=-1, end=None)


def _candidates(F, iou, valid):
    """Candidate pairs per image, flattened gt-major, then one sentinel per gt.

    Returns ``(keys, gts, anchors)``, each ``(B, P)`` with ``P = M * K + M``: priority
    (float64, ``-inf`` for pairs that can never match), gt and anchor (float32; -1 for
    sentinels). Sentinels come after all pairs, so pairs of other gts with an equal key (same
    anchor and IoU) go first, as they should.
    """
    keys, anchors, sentinel = _lists(F, iou, valid)  # (B, M, K), (B, M, 1)
    gts = F.broadcast_like(F.reshape(F.contrib.arange_like(valid, axis=1), (1, -1, 1)), anchors)
    first = F.slice_axis(gts, axis=2, begin=0, end=1)  # (B, M, 1) gt index
    return (F.concat(F.reshape(keys, (0, -1)), F.reshape(sentinel, (0, -1)), dim=1),
            F.concat(F.reshape(gts, (0, -1)), F.reshape(first, (0, -1)), dim=1),
            F.concat(F.reshape(anchors, (0, -1)), F.reshape(first * 0 - 1, (0, -1)), dim=1))


def _greedy_step(F, keys, gts, anchors, never):
    """Take each image's best live pair; kill the pairs of its gt and of its anchor.

    ``keys (B, P)`` live priorities (``-inf`` = dead); ``gts/anchors (B, P)``; ``never`` an
    all ``-inf`` array like ``keys``. Equal keys: ``argmax`` takes the first, the lowest gt (the
    layout is gt-major). Reaching a sentinel (anchor -1) stops the image: beyond that gt's list
    the order is unknown. Returns ``(keys, key, gt, anchor)``, the last three ``(B, 1)``; the
    step matched a pair iff ``key > -inf`` and ``anchor >= 0``.
    """
    best = F.argmax(keys, axis=1, keepdims=True)
    key = F.pick(keys, best, axis=1, keepdims=True)
    gt = F.pick(gts, best, axis=1, keepdims=True)
    anchor = F.pick(anchors, best, axis=1, keepdims=True)
    dead = F.broadcast_add(F.broadcast_equal(gts, gt) + F.broadcast_equal(anchors, anchor),
                           anchor < 0)  # a sentinel kills the whole image
    return F.where(dead, never, keys), key, gt, anchor


def _greedy_loop(F, iou, valid):
    """``foreach`` over the gts, one greedy step each: ``(key, gt, anchor)`` ``(M, B, 1)``."""
    keys, gts, anchors = _candidates(F, iou, valid)
    never = F.ones_like(keys) * -np.inf

    def step(gt_id, states):
        live_keys, key, gt, anchor = _greedy_step(F, states[0], gts, anchors, never)
        return [key, gt, anchor, gt_id], [live_keys]  # foreach insists on using its data

    steps, _ = F.contrib.foreach(step, F.reshape(F.contrib.arange_like(iou, axis=0), (-1, 1)),
                                 [keys])
    return steps[:3]


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
    1 where the bipartite stage stopped early (see the module docstring).
    """
    key, gt, anchor = _greedy_loop(F, iou, valid)
    live = F.cast(key > -np.inf, dtype='float32')  # (M, B, 1)
    best_gt, best_iou = threshold_match(F, iou)
    bipartite_gt = _scatter_matches(F, gt, anchor, live * (anchor >= 0), best_iou)
    stopped = F.max(live * (anchor < 0), axis=0)
    return bipartite_gt, best_gt, best_iou, F.reshape(stopped, (-1,))


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
