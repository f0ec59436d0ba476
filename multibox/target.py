"""MultiBoxTarget as a HybridBlock: SSD training targets, bit-exact with the native CPU op.

Recipe (docs/ops-semantics.md §3.4): valid gts -> IoU -> bipartite + threshold matching
(:mod:`multibox.matcher`) -> negatives, all or mined (:mod:`multibox.mining`) -> class targets
and box offsets (:func:`multibox.coder.encode`).

Errors. The native CPU op fails (CHECK) on: a first padding row (class -1) whose coordinates are
not all -1; mining (``negative_mining_ratio > 0``) with ``negative_mining_thresh <= 0`` in an
image with a ground truth; fewer mining candidates than negatives to pick. Ours also refuses
mining that would have to rank a NaN background probability (a candidate anchor whose
``cls_pred`` column holds a NaN or ``+inf``, or only ``-inf``): the native op then sorts NaN keys
with ``std::sort``, whose order is unspecified, so no result can be called right (docs/ops-
semantics.md §5). A ``-inf`` logit beside finite ones is ranked normally. The graph computes a
per-image error code and gates its outputs through ``take(..., mode='raise')`` with an
out-of-range index when a code is set, so hybridized, symbolic and exported graphs fail too
(``MXNetError: take operator contains indices out of bound``). Called on NDArrays, the block
waits for its outputs, and on such a failure recomputes the codes imperatively and raises a
``ValueError`` naming the image and the cause.

Symbol graphs: no control-flow operator (no ``foreach``, which read stale inputs inside large
``Module`` graphs, no ``while_loop``/``cond``, through which MXNet infers no shapes), so graphs run
under CachedOp (``hybridize``, ``SymbolBlock``, exported JSON) and under legacy
``Symbol.bind``/``mx.mod.Module``. Hybridize with ``static_alloc=True`` only:
with ``static_shape=True`` MXNet 1.9.1 computed wrong results for some inputs (not understood).

Exactness: bit-exact with the native op, except that the bipartite matching of an image may
differ when its gts exhaust their :data:`multibox.matcher.LIST_SIZE`-anchor candidate lists,
which needs more than ``LIST_SIZE`` valid gts crowding the same anchors (see
:mod:`multibox.matcher`, which flags such images).

Deviations: ``minimum_negative_samples`` is accepted and ignored, as on CPU. ``cls_pred`` must
have the label's batch size (native reads out of bounds when it is smaller). Gradients are
stopped: every input gets a zero (or no) gradient.
"""
import numpy as np
from mxnet import autograd, nd
from mxnet.base import MXNetError

from . import matcher, mining
from .coder import encode
from .params import as_int, dmlc_float, float_tuple
from .validate import CheckedBlock, accepts_numpy, as_legacy, check_anchors, check_array

__all__ = ['MultiBoxTarget']

_NO_ERROR, _BAD_PADDING, _BAD_MINING_THRESH, _SHORTAGE, _UNRANKABLE = 0, 1, 2, 3, 4


def _input_order(F, anchor, label, cls_pred):
    """A ``(1, 1)`` zero that depends on the inputs in signature order.

    The outputs visit it first, so a symbol graph lists its arguments in the order the native
    op's graph does (anchor's producers, then label, then cls_pred): mxnet-ssd style code
    that binds arguments by position keeps working.
    """
    corners = [F.reshape(F.slice_axis(F.slice_axis(x, axis=1, begin=0, end=1), axis=2, begin=0,
                                      end=1), (-1,)) for x in (anchor, label, cls_pred)]
    zero = F.zeros_like(F.slice_axis(corners[0], axis=0, begin=0, end=1))
    for corner in corners:
        zero = zero + F.zeros_like(F.slice_axis(corner, axis=0, begin=0, end=1))
    return F.reshape(zero, (1, 1))


class MultiBoxTarget(CheckedBlock):
    """Training targets for SSD anchors, like the native contrib ``MultiBoxTarget`` on CPU.

    Parameters
    ----------
    overlap_threshold : float
        A non-bipartite anchor is positive iff its best IoU is strictly greater; ``<= 0`` keeps
        only bipartite positives.
    ignore_label : float
        ``cls_target`` of anchors that are neither positive nor negative.
    negative_mining_ratio : float
        ``> 0``: at most ``ratio * num_pos`` hard negatives per image; ``<= 0``: every
        non-positive anchor is negative.
    negative_mining_thresh : float
        Mining candidates have best IoU strictly below it; must be ``> 0`` when mining runs.
    minimum_negative_samples : int
        Accepted and ignored, as by the native CPU op.
    variances : 4 floats or their string ``"(0.1,0.1,0.2,0.2)"``
        Divisors of the encoded ``(dx, dy, dw, dh)``.

    Inputs: ``anchor (1, N, 4)`` corner boxes; ``label (B, M, W >= 5)`` rows
    ``[class, xmin, ymin, xmax, ymax, ...]``, padded with ``-1`` rows; ``cls_pred (B, C, N)``
    logits, class 0 = background. All float32.

    Outputs: ``loc_target (B, N*4)`` anchor-major offsets (0 unless positive), ``loc_mask
    (B, N*4)`` 1 for positives, ``cls_target (B, N)``: ``class + 1`` for positives, 0 for
    negatives, ``ignore_label`` otherwise (every anchor of an image without valid gts).
    ``mx.np`` inputs (numpy mode) give ``mx.np`` outputs.
    """

    def __init__(self, overlap_threshold=0.5, ignore_label=-1.0, negative_mining_ratio=-1.0,
                 negative_mining_thresh=0.5, minimum_negative_samples=0,
                 variances=(0.1, 0.1, 0.2, 0.2), **kwargs):
        super().__init__(**kwargs)
        self._overlap_threshold = dmlc_float(overlap_threshold, 'overlap_threshold')
        self._ignore_label = dmlc_float(ignore_label, 'ignore_label')
        self._mining_ratio = dmlc_float(negative_mining_ratio, 'negative_mining_ratio')
        self._mining_thresh = dmlc_float(negative_mining_thresh, 'negative_mining_thresh')
        self._minimum_negative_samples = as_int(minimum_negative_samples,
                                                'minimum_negative_samples')
        self._variances = float_tuple(variances, 'variances', length=4)

    def check_inputs(self, anchor, label, cls_pred):
        name = type(self).__name__
        check_array(name, 'label', label, ndim=3)
        check_array(name, 'cls_pred', cls_pred, ndim=3)
        check_anchors(name, anchor)
        if label.shape[1] < 1 or label.shape[2] < 5:
            raise ValueError(f"{name}: label must have shape (B, M, W) with M >= 1 and "
                             f"width W >= 5, got {label.shape}")
        if cls_pred.shape[2] != anchor.shape[1]:
            raise ValueError(f"{name}: cls_pred must have shape (B, C, N) with N = "
                             f"{anchor.shape[1]} anchors, got {cls_pred.shape}")
        if cls_pred.shape[0] != label.shape[0] or cls_pred.shape[1] < 1:
            raise ValueError(f"{name}: cls_pred must have shape (B, C, N) with the label's batch "
                             f"size B = {label.shape[0]} and C >= 1, got {cls_pred.shape}")

    def forward(self, anchor, label, cls_pred):
        if not isinstance(anchor, nd.NDArray):
            return super().forward(anchor, label, cls_pred)
        try:  # a cached graph fails in the call, an imperative one when read
            outputs = super().forward(anchor, label, cls_pred)
            for out in outputs:
                out.wait_to_read()
        except MXNetError as err:
            raise self._diagnose(anchor, label, cls_pred) from err
        return outputs

    @accepts_numpy
    def hybrid_forward(self, F, anchor, label, cls_pred):
        # blocking the inputs too keeps backward passes away from the operators in between;
        # cls_pred is blocked where it is transposed (mining), which needs no copy
        anchor, label = F.stop_gradient(anchor), F.stop_gradient(label)
        decision, report = self._decide(F, anchor, label, cls_pred)
        # out-of-range index (2) iff some image has an error code: take() then fails at run time
        failing = F.max(report['code'], axis=0) > _NO_ERROR
        gate = F.reshape(F.take(F.ones((1,)), failing * 2, mode='raise'), (1, 1))
        gate = F.broadcast_add(_input_order(F, anchor, label, cls_pred), gate)
        # every output depends on the gate through the (B, N) masks (x * 1 == x): cheaper than
        # gating the (B, 4N) outputs themselves
        positive, has_gt = (F.broadcast_mul(gate, decision[k]) for k in ('positive', 'has_gt'))
        outputs = self._assign(F, anchor, label, positive, decision['negative'],
                               decision['gt_index'], has_gt)
        return tuple(F.stop_gradient(out) for out in outputs)

    def _decide(self, F, anchor, label, cls_pred):
        """Per-anchor decisions and the per-image ``(B,)`` diagnostics ``report``.

        Decisions: ``positive``, ``negative`` 0/1 and ``gt_index`` (matched gt) ``(B, N)``,
        ``has_gt`` ``(B, 1)`` 1 for images with a valid gt.
        """
        classes = F.reshape(F.slice_axis(label, axis=2, begin=0, end=1), (0, 0))
        valid, first_pad = matcher.valid_gts(F, classes)
        has_gt = F.sum(valid, axis=1) > 0  # (B,): a tiny reduction
        gt_boxes = matcher.sanitize_boxes(F, F.slice_axis(label, axis=2, begin=1, end=5),
                                          F.expand_dims(valid, 2))
        anchors = matcher.pad_anchors(F, matcher.sanitize_boxes(F, anchor))
        iou = matcher.iou_matrix(F, gt_boxes, anchors)  # (M, B, N + NUM_PAD)
        bipartite_gt, best_gt, best_iou, inexact = matcher.match(F, iou, valid)
        # (B, N); cls_pred stays an input of the graph even without mining
        logit0 = F.stop_gradient(F.reshape(F.slice_axis(cls_pred, axis=1, begin=0, end=1), (0, -1)))
        best_gt, best_iou, bipartite_gt = (F.slice_like(x, logit0)  # drop the padding anchors
                                           for x in (best_gt, best_iou, bipartite_gt))
        positive, gt_index = self._positives(F, bipartite_gt, best_gt, best_iou)
        negative, report = self._negatives(F, cls_pred, positive, best_iou, has_gt)
        report['inexact'] = inexact
        report['code'] = F.where(matcher.malformed_padding(F, label, first_pad),
                                 F.ones_like(has_gt) * _BAD_PADDING, report['code'])
        decision = {'positive': positive, 'negative': negative, 'gt_index': gt_index,
                    'has_gt': F.expand_dims(has_gt, 1)}
        return decision, report

    def _positives(self, F, bipartite_gt, best_gt, best_iou):
        """Positive mask and matched gt index per anchor, ``(B, N)`` each."""
        positive = bipartite_gt >= 0
        if self._overlap_threshold <= 0:  # native skips the threshold stage entirely
            return positive, F.maximum(bipartite_gt, 0)
        gt_index = F.where(positive, bipartite_gt, best_gt)
        return F.maximum(positive, best_iou > self._overlap_threshold), gt_index

    def _negatives(self, F, cls_pred, positive, best_iou, has_gt):
        """Negative mask ``(B, N)`` and the per-image error report of the mining stage."""
        zeros = F.zeros_like(has_gt)
        if self._mining_ratio <= 0:
            return 1 - positive, {'code': zeros, 'num_neg': zeros, 'candidates': zeros}
        candidate = (1 - positive) * (best_iou < self._mining_thresh)
        num_neg = mining.num_negatives(F, positive, self._mining_ratio)
        prob = mining.background_prob(F, cls_pred)
        negative, shortage = mining.hard_negatives(F, prob, candidate, num_neg)
        failure = _BAD_MINING_THRESH if self._mining_thresh <= 0 else _SHORTAGE
        failed = has_gt if self._mining_thresh <= 0 else has_gt * shortage
        # NaN keys (prob != prob) would be ranked by the native sort in an unspecified order;
        # the native CHECKs above come first
        unrankable = candidate * (prob != prob)
        refused = (1 - failed) * has_gt * (num_neg > 0) * (mining.count(F, unrankable) > 0)
        report = {'code': failed * failure + refused * _UNRANKABLE, 'num_neg': num_neg,
                  'candidates': mining.count(F, candidate), 'unrankable': unrankable}
        return negative, report

    def _assign(self, F, anchor, label, positive, negative, gt_index, has_gt):
        """Encode the targets: ``(loc_target (B, 4N), loc_mask (B, 4N), cls_target (B, N))``.

        ``positive, negative, gt_index (B, N)``, ``has_gt (B, 1)``.
        """
        # the matched label columns (B, 5, N) by one take from the (B, 5, M) transposed labels:
        # column c of image b starts at (b * 5 + c) * M; coordinate-major rows keep the encoding
        # on contiguous blocks (last-axis splits and concats cost ~4 ms at SSD300 batch 8)
        columns = F.transpose(F.slice_axis(label, axis=2, begin=0, end=5), axes=(0, 2, 1))
        rows_per_image = F.reshape(F.cast(F.slice_axis(F.shape_array(label), axis=0, begin=1,
                                                       end=2), dtype='float32'), (1, 1, 1))
        starts = F.broadcast_mul(F.reshape(F.contrib.arange_like(
            F.reshape(F.slice_axis(columns, axis=2, begin=0, end=1), (-1,))), (-1, 5, 1)),
            rows_per_image)  # (B, 5, 1)
        matched = F.take(F.reshape(columns, (-1,)),
                         F.broadcast_add(starts, F.expand_dims(gt_index, 1)))  # (B, 5, N)
        matched_class = F.reshape(F.slice_axis(matched, axis=1, begin=0, end=1), (0, -1))
        offsets = encode(F, F.transpose(anchor, axes=(0, 2, 1)),
                         F.slice_axis(matched, axis=1, begin=1, end=5), self._variances, axis=1)
        offsets = F.transpose(offsets, axes=(0, 2, 1))  # (B, N, 4)
        mask = F.broadcast_like(F.expand_dims(positive, 2), offsets)
        loc_target = F.where(mask, offsets, F.zeros_like(offsets))
        ignore = F.ones_like(positive) * self._ignore_label
        cls_target = F.where(positive, matched_class + 1,
                             F.where(negative, F.zeros_like(positive), ignore))
        cls_target = F.where(F.broadcast_like(has_gt, cls_target), cls_target, ignore)
        return (F.reshape(loc_target, (0, -1)), F.reshape(mask, (0, -1)), cls_target)

    def _diagnose(self, anchor, label, cls_pred):
        """The ValueError for a failed NDArray call, from imperatively recomputed error codes."""
        with autograd.pause():
            report = self._decide(nd, *(as_legacy(x) for x in (anchor, label, cls_pred)))[1]
        codes = report['code'].asnumpy()
        failing = np.flatnonzero(codes)
        if failing.size == 0:
            return ValueError("MultiBoxTarget failed for a reason other than the native CHECKs "
                              "it reproduces (see the chained MXNetError)")
        image, code = int(failing[0]), int(codes[failing[0]])
        if code == _BAD_PADDING:
            return ValueError(
                f"MultiBoxTarget: label of image {image}: the first padding row (class -1) must "
                f"have coordinates -1 too (the native op fails its padding CHECK)")
        if code == _BAD_MINING_THRESH:
            return ValueError(
                f"MultiBoxTarget: negative_mining_thresh={self._mining_thresh} must be > 0 when "
                f"negative_mining_ratio={self._mining_ratio} > 0 and an image has ground truths "
                f"(image {image}; native CHECK negative_mining_thresh > 0)")
        if code == _UNRANKABLE:
            anchor_index = int(np.flatnonzero(report['unrankable'].asnumpy()[image])[0])
            return ValueError(
                f"MultiBoxTarget: cls_pred of image {image} is NaN or infinite at anchor "
                f"{anchor_index}, a hard negative mining candidate: its background probability "
                f"is NaN and cannot be ranked (the native op's result is then unspecified); "
                f"mining needs finite logits (a -inf beside finite ones is allowed)")
        wanted = int(report['num_neg'].asnumpy()[image])
        found = int(report['candidates'].asnumpy()[image])
        return ValueError(
            f"MultiBoxTarget: hard negative mining of image {image} needs {wanted} negatives "
            f"(negative_mining_ratio={self._mining_ratio}) but only {found} anchors are "
            f"candidates (best IoU < negative_mining_thresh={self._mining_thresh}, not "
            f"positive); native CHECK temp.size() >= num_negative")
