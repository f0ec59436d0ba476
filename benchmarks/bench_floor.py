"""How close the speed targets are to the cost of the operators no exact graph can drop.

bench_ops.py times the whole MultiBoxTarget and MultiBoxDetection blocks. This script times,
on the same SSD300 workload and interleaved with the native ops, hybridized graphs that keep
only the full-size steps each block needs to be exact, built from the blocks' own helpers:

* target core: the IoU of every gt with every anchor (``box_iou``), both matching stages
  (``multibox.matcher.match``: each gt's candidate list by float64 priorities and ``topk``,
  ``bipartite_matching`` on the candidate submatrix, each anchor's first best gt by ``argmax``),
  and the exact mining softmax of every logit (``Pooling``, ``exp``, ``cumsum``);
* detection core: the best foreground class of every anchor (``Pooling``), the ``nms_topk``
  best keys (float64, ``topk``), and greedy NMS of those rows (``box_nms``) with their classes.

Left out, so that each core is a lower bound: error codes, positives, mining selection and box
encoding (Target); box decoding, compaction and the leftover-row quirk (Detection). The ratio
printed for a core is the smallest ratio to the native op that the block could reach by
removing everything else, at this operator set.

    python benchmarks/bench_floor.py [--rounds 15] [--batches 8 32]
"""
import argparse

import mxnet as mx
import numpy as np
from mxnet.gluon import HybridBlock

from bench_ops import DETECTION_PARAMS, TARGET_PARAMS, compare, workload
from multibox import detection, matcher, mining
from multibox.nms import greedy_nms_keep
from multibox.ordering import descending_key, gather_columns, gather_rows

THRESHOLD = 0.01  # MultiBoxDetection's default score threshold, which the workload uses


class TargetCore(HybridBlock):
    """The full-size steps of MultiBoxTarget: IoU, both matching stages, mining softmax."""

    def hybrid_forward(self, F, anchor, label, cls_pred):
        valid, _ = matcher.valid_gts(F, F.reshape(F.slice_axis(label, axis=2, begin=0, end=1),
                                                   (0, 0)))
        boxes = F.slice_axis(label, axis=2, begin=1, end=5)
        iou = matcher.iou_matrix(F, boxes, matcher.pad_anchors(F, anchor))
        bipartite_gt, best_gt, best_iou, _ = matcher.match(F, iou, valid)
        return bipartite_gt, best_gt, best_iou, mining.background_prob(F, cls_pred)


class DetectionCore(HybridBlock):
    """The full-size steps of MultiBoxDetection: best class, top-k keys, NMS of the top rows."""

    def __init__(self, nms_topk, nms_threshold, **kwargs):
        super().__init__(**kwargs)
        self._nms_topk, self._nms_threshold = nms_topk, nms_threshold

    def hybrid_forward(self, F, cls_prob, loc_pred, anchor):
        best = detection._best_foreground(F, cls_prob)
        _, order = F.topk(descending_key(F, best, best >= THRESHOLD), axis=1, k=self._nms_topk,
                          ret_typ='both', dtype='float32')
        score = F.reshape(gather_rows(F, F.expand_dims(best, axis=2), order), (0, 0))
        class_id = detection._first_best_class(F, gather_columns(F, cls_prob, order), score)
        boxes = F.take(F.reshape(anchor, (-1, 4)), order)  # undecoded: a lower bound
        keep = greedy_nms_keep(F, class_id, boxes, self._nms_threshold, False)
        # loc_pred only keeps the op's three inputs (decoding it is left out)
        return keep, F.slice_axis(loc_pred, axis=1, begin=0, end=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--batches', type=int, nargs='+', default=[8, 32])
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    target_core = TargetCore()
    detection_core = DetectionCore(DETECTION_PARAMS['nms_topk'],
                                   DETECTION_PARAMS['nms_threshold'])
    for block in (target_core, detection_core):
        block.hybridize(static_alloc=True)
    print(f"MXNet {mx.__version__}, CPU, SSD300 workload: the exact blocks' unavoidable "
          f"operators alone, against the whole native op")
    for batch in args.batches:
        w = workload(batch, rng)
        compare(f"MultiBoxTarget core b{batch}",
                lambda: mx.nd.contrib.MultiBoxTarget(w['anchors'], w['labels'], w['cls_pred'],
                                                     **TARGET_PARAMS),
                lambda: target_core(w['anchors'], w['labels'], w['cls_pred']), args.rounds)
        compare(f"MultiBoxDetection core b{batch}",
                lambda: mx.nd.contrib.MultiBoxDetection(w['cls_prob'], w['loc_pred'],
                                                        w['anchors'], **DETECTION_PARAMS),
                lambda: detection_core(w['cls_prob'], w['loc_pred'], w['anchors']), args.rounds)


if __name__ == '__main__':
    main()
