"""MultiBoxDetection: SSD post-processing (best class, decode, compaction, sort, top-k, NMS).

A HybridBlock made of standard MXNet operators that reproduces the native CPU operator
MXNet 1.9.1's native contrib ``MultiBoxDetection`` bit for bit, quirks included
(docs/ops-semantics.md §4.3):

* the detection of anchor ``i`` is its best foreground class (strict ``>``, starting from -1, so
  ties pick the lowest class and NaN never wins); it is kept iff ``not score < threshold``;
* boxes are decoded with the native float32 operation order; ``clip`` maps NaN to 1;
* kept detections are compacted to the front in anchor order; rows after them are all -1;
* if ``0 < nms_threshold <= 1`` (or NaN): stable sort by score, then the ``nms_topk`` quirk --
  rows ``nkeep..V-1`` hold the *unsorted* compacted rows with class id -1 -- then greedy NMS
  that writes -1 into the class id column only (``iou >= nms_threshold`` suppresses).

Output rows are ``[class_id, score, xmin, ymin, xmax, ymax]`` with ``class_id`` the 0-based
foreground class (``cls_prob`` channel minus 1) or -1.
"""
import math

from . import coder
from .classes import background_and_foreground_max
from .nms import greedy_nms_keep
from .ordering import compacted_sources, descending_key, gather_columns, gather_rows
from .params import as_bool, as_int, dmlc_float, float_tuple
from .validate import CheckedBlock, accepts_numpy, check_anchors, check_array

__all__ = ['MultiBoxDetection']

# Channel rank base for the first-best-class search, > CLASS_WINDOW + 1.
_RANK_BASE = 2.0 ** 20


class MultiBoxDetection(CheckedBlock):
    """Convert SSD class probabilities and box offsets into detections.

    Parameters
    ----------
    clip : bool, clamp decoded coordinates to [0, 1] (``max(0, min(1, v))``: NaN becomes 1).
    threshold : float, minimum best foreground probability of a detection.
    background_id : int, accepted and ignored like the native op (channel 0 is background).
    nms_threshold : float, IoU at which NMS suppresses; outside (0, 1] disables sort and NMS.
    force_suppress : bool, suppress across classes.
    variances : 4 floats (or their string), multipliers of the offsets ``[dx, dy, dw, dh]``.
    nms_topk : int, only the best ``nms_topk`` detections take part in NMS (<= 0: all).

    Inputs
    ------
    cls_prob : (B, C, N) float32 probabilities, channel 0 = background.
    loc_pred : (B, 4N) float32 offsets, anchor-major ``[dx, dy, dw, dh]``.
    anchor : (1, N, 4) float32 corner anchors.

    Output
    ------
    (B, N, 6) float32 ``[class_id, score, xmin, ymin, xmax, ymax]``, -1 rows as the native op.
    No gradient flows to the inputs. ``mx.np`` inputs (numpy mode) give ``mx.np`` outputs.
    """

    def __init__(self, clip=True, threshold=0.01, background_id=0, nms_threshold=0.5,
                 force_suppress=False, variances=(0.1, 0.1, 0.2, 0.2), nms_topk=-1, **kwargs):
        super().__init__(**kwargs)
        self._clip = as_bool(clip, 'clip')
        self._threshold = dmlc_float(threshold, 'threshold')
        self._background_id = as_int(background_id, 'background_id')  # ignored, as native
        self._nms_threshold = dmlc_float(nms_threshold, 'nms_threshold')
        self._force_suppress = as_bool(force_suppress, 'force_suppress')
        self._variances = float_tuple(variances, 'variances', length=4)
        self._nms_topk = as_int(nms_topk, 'nms_topk')

    def check_inputs(self, cls_prob, loc_pred, anchor):
        name = type(self).__name__
        check_array(name, 'cls_prob', cls_prob, ndim=3)
        check_array(name, 'loc_pred', loc_pred, ndim=2)
        check_anchors(name, anchor)
        num_anchors = anchor.shape[1]
        if loc_pred.shape[1] != 4 * num_anchors:
            raise ValueError(f"{name}: loc_pred must have shape (B, 4N) = (B, {4 * num_anchors})"
                             f" for N={num_anchors} anchors, got {loc_pred.shape}")
        if cls_prob.shape[2] != num_anchors:
            raise ValueError(f"{name}: cls_prob must have shape (B, C, N) with N={num_anchors}"
                             f" anchors, got {cls_prob.shape}")
        if loc_pred.shape[0] != cls_prob.shape[0]:
            raise ValueError(f"{name}: loc_pred batch {loc_pred.shape[0]} differs from cls_prob"
                             f" batch {cls_prob.shape[0]}")

    @accepts_numpy
    def hybrid_forward(self, F, cls_prob, loc_pred, anchor):
        # Nothing here is differentiable. Cutting the gradient where the inputs are first used
        # keeps autograd from running the backward of the ordering operators at all.
        loc_pred, anchor = F.stop_gradient(loc_pred), F.stop_gradient(anchor)
        best = F.stop_gradient(_best_foreground(F, cls_prob))
        # `not score < threshold` rather than `>=`: a NaN threshold keeps everything. As 0/1
        # masks, `a > b` is `a and not b`: one operator instead of a negation and a product.
        valid = F.broadcast_greater(best > -1, best < self._threshold)
        if not self._sorts():
            class_id = _first_best_class(F, cls_prob, best)
            rows = self._anchor_rows(F, class_id, best, loc_pred, anchor)
            out = _compact(F, rows, valid)
        else:
            rows = self._anchor_rows(F, F.ones_like(best) * -1, best, loc_pred, anchor)
            out = self._sorted_detections(F, cls_prob, rows, best, valid)
        return out

    def _sorts(self):
        """Native: sort and NMS only run if 0 < nms_threshold <= 1 (NaN passes that test)."""
        return not (self._nms_threshold <= 0 or self._nms_threshold > 1)

    def _anchor_rows(self, F, class_id, best, loc_pred, anchor):
        """Rows ``[class_id, best, xmin, ymin, xmax, ymax]`` (B, N, 6) of every anchor, in order.

        The boxes are decoded with one coordinate per row of a (B, 4, N) array, where splitting
        and concatenating are contiguous copies; a single transpose makes the rows at the end.
        """
        offsets = F.transpose(F.reshape(loc_pred, (0, -1, 4)), axes=(0, 2, 1))
        boxes = coder.decode(F, F.transpose(anchor, axes=(0, 2, 1)), offsets, self._variances,
                             axis=1)
        if self._clip:
            # std::max(0, std::min(1, v)) as written natively: min(1, NaN) is 1, max(0, -0.) is 0
            # (relu returns +0 for -0).
            boxes = F.relu(F.where(boxes < 1, boxes, F.ones_like(boxes)))
        columns = F.concat(F.expand_dims(class_id, axis=1), F.expand_dims(best, axis=1), boxes,
                           dim=1)
        return F.transpose(columns, axes=(0, 2, 1))

    def _sorted_detections(self, F, cls_prob, rows, best, valid):
        """Sorted rows, NMS applied; with ``nms_topk`` the native leftover-row quirk.

        Only the rows that take part in NMS need a class id (the leftover rows show -1), so
        the class columns of just those anchors are gathered and searched.
        """
        key = descending_key(F, best, valid)
        limit = self._nms_topk
        if limit <= 0:
            order = F.argsort(key, axis=1, is_ascend=False, dtype='float32')
            chosen = F.reshape(gather_rows(F, F.expand_dims(valid, axis=2), order), (0, 0))
        else:
            # Pad the keys so that top-k also works with fewer than nms_topk anchors.
            filler = F.broadcast_axis(F.ones_like(F.slice_axis(key, axis=1, begin=0, end=1))
                                      * -math.inf, axis=1, size=limit)
            best_keys, order = F.topk(F.concat(key, filler, dim=1), axis=1, k=limit,
                                      ret_typ='both', dtype='float32')
            chosen = best_keys > -math.inf
        top = gather_rows(F, rows, order)
        score = F.reshape(F.slice_axis(top, axis=2, begin=1, end=2), (0, 0))
        class_id = _first_best_class(F, gather_columns(F, cls_prob, order), score)
        class_id = F.where(chosen, class_id, F.ones_like(class_id) * -1)
        boxes = F.slice_axis(top, axis=2, begin=2, end=6)
        keep = greedy_nms_keep(F, class_id, boxes, self._nms_threshold, self._force_suppress)
        top = F.concat(F.expand_dims(F.where(keep, class_id, F.ones_like(class_id) * -1), axis=2),
                       F.slice_axis(top, axis=2, begin=1, end=6), dim=2)
        top = F.where(_along_rows(F, chosen, top), top, F.ones_like(top) * -1)
        if limit <= 0:
            return top
        # Rows nkeep..V-1 keep the unsorted compacted detection with class id -1 (native quirk):
        # output row r is top row r for r < nms_topk, else the r-th valid anchor's row.
        return _compact(F, rows, valid, head=top, head_length=limit)


def _best_foreground(F, cls_prob):
    """Best foreground probability (B, K) of ``cls_prob`` (B, C, K), by the native rule.

    The native loop keeps ``p`` iff ``p > best`` starting from -1: NaN never wins and the first
    of equal values is kept. MXNet's CPU max pooling does the same starting from -FLT_MAX
    (checked with MXNet 1.9.1 for NaN, +-inf and -0./0. ties), so the result is bit for bit
    the native score whenever it is > -1, and <= -1 exactly when no class beats -1 (the anchor
    is invalid).

    The maximum comes from :func:`multibox.classes.background_and_foreground_max`.
    """
    pooled = background_and_foreground_max(F, cls_prob)  # (B, 2, K)
    return F.reshape(F.slice_axis(pooled, axis=1, begin=1, end=2), (0, -1))


def _first_best_class(F, cls_prob, best):
    """0-based id (B, K) of the first foreground channel whose probability equals ``best``.

    Channel ``j`` scores ``_RANK_BASE - j`` where it holds the best value and 0 elsewhere, so
    the best-scoring channel is the first one. ``>=`` equals ``==`` here (``best`` is the
    maximum) and also matches -0. with 0. like the native comparison chain does. Garbage for
    anchors without a foreground candidate (they are invalid).
    """
    hits = F.stop_gradient(cls_prob >= F.broadcast_like(F.expand_dims(best, axis=1), cls_prob))
    rank = _RANK_BASE - F.reshape(F.contrib.arange_like(cls_prob, axis=1), (1, -1, 1))
    return (_RANK_BASE - 1) - _best_foreground(F, F.broadcast_mul(hits, rank))


def _compact(F, rows, valid, head=None, head_length=0):
    """Valid ``rows`` (B, N, 6) moved to the front in order, all -1 rows after them.

    With ``head`` (B, M, 6), output rows ``0..M-1`` are ``head``'s rows instead (``M`` =
    ``head_length``; rows past N are dropped). Done as one gather from the table
    ``[rows; a -1 row; head rows]``.
    """
    flat = F.reshape(rows, (-3, 0))
    minus_row = F.ones_like(F.slice_axis(flat, axis=0, begin=0, end=1)) * -1
    source, count = compacted_sources(F, valid)
    minus_index = F.reshape(F.cast(F.size_array(valid), dtype='float32'), (1, 1))  # B * N
    position = F.reshape(F.contrib.arange_like(valid, axis=1), (1, -1))
    index = F.where(F.broadcast_lesser(position, count), source,
                    F.broadcast_like(minus_index, source))
    tables = [flat, minus_row]
    if head is not None:
        head_start = F.broadcast_add(F.reshape(F.contrib.arange_like(valid, axis=0),
                                               (-1, 1)) * head_length, minus_index + 1)
        in_head = F.broadcast_like(position < head_length, index)
        index = F.where(in_head, F.broadcast_add(position, head_start), index)
        tables.append(F.reshape(head, (-3, 0)))
    return F.reshape_like(F.take(F.concat(*tables, dim=0), F.reshape(index, (-1,))), rows)


def _along_rows(F, mask, rows):
    """Broadcast a (B, N) row mask to the shape of ``rows`` (B, N, K)."""
    return F.broadcast_like(F.expand_dims(mask, axis=2), rows)
