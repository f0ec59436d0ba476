"""Detection quality: Pascal VOC AP (11-point VOC07 or area) and COCO AP.

Detections are MultiBoxDetection rows ``[class_id, score, xmin, ymin, xmax, ymax]`` (class -1 =
suppressed or empty) and ground truths are label rows ``[class, xmin, ymin, xmax, ymax,
difficult]`` (-1 padding). VOC AP is computed in normalized coordinates: IoU does not change
when both boxes are scaled by the same factors, so no pixel conversion is needed. The AP itself
is GluonCV's implementation (``VOC07MApMetric`` / ``VOCMApMetric``), the metric peers report.
"""
import numpy as np
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric, VOCMApMetric

__all__ = ['VOCEvaluator', 'format_ap_table', 'coco_ap']


class VOCEvaluator:
    """Accumulates detections and ground truths batch by batch; ``summary()`` gives the APs."""

    def __init__(self, class_names, voc07=True, iou_thresh=0.5):
        metric = VOC07MApMetric if voc07 else VOCMApMetric
        self.class_names = list(class_names)
        self._metric = metric(iou_thresh=iou_thresh, class_names=self.class_names)

    def update(self, detections, labels):
        """``detections`` (B, N, 6) and ``labels`` (B, L, 6) NumPy arrays of one batch."""
        for found, truth in zip(detections, labels):  # one image at a time: counts differ
            found, truth = found[found[:, 0] >= 0][None], truth[truth[:, 0] >= 0][None]
            self._metric.update(pred_bboxes=found[..., 2:6], pred_labels=found[..., 0],
                                pred_scores=found[..., 1], gt_bboxes=truth[..., 1:5],
                                gt_labels=truth[..., 0], gt_difficults=truth[..., 5])

    def summary(self):
        """``[(class_name, AP), ..., ('mAP', value)]``; a class without ground truth has AP NaN."""
        names, values = self._metric.get()
        return list(zip(names, [float(v) for v in values]))


def format_ap_table(summary):
    """A two-column text table of per-class AP and the mAP."""
    width = max(len(name) for name, _ in summary)
    lines = [f"{'class':<{width}}  AP"]
    lines += [f"{name:<{width}}  {value:.4f}" for name, value in summary]
    return '\n'.join(lines)


def coco_ap(annotation_file, detections):
    """COCO box AP with pycocotools.

    ``detections``: dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}`` in
    pixels of the original images. Returns pycocotools' 12 summary numbers (AP, AP50, AP75, ...).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    truth = COCO(annotation_file)
    if not detections:
        return np.zeros(12)
    evaluation = COCOeval(truth, truth.loadRes(detections), 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return evaluation.stats
