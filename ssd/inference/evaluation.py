"""Detection quality as the field's scorers compute it: Pascal VOC AP (devkit rules) and COCO AP.

VOC AP is scored in pixels of the original image, by the rules of the VOC devkit
(``VOCevaldet.m``), which GluonCV's ``VOC07MApMetric`` and ``eval_ssd.py`` follow too:

* a box's width is ``xmax - xmin + 1`` (corners are inclusive pixel indices), so the IoU of two
  boxes depends on the image's size: it must be computed in pixels, never on [0, 1] corners
  (there the ``+ 1`` would swell every box beyond the image and inflate the AP);
* per class, all detections of all images are sorted by score (highest first, ties in image
  order); each takes the ground truth it overlaps most in its image; IoU ``> iou_thresh``
  with an unclaimed one is a true positive, a claimed one or a lower IoU a false positive;
* difficult objects stay in the ground-truth list: a detection whose best overlap is a
  difficult object is neither true nor false positive, and they do not count as objects to find;
* AP is the mean of the 11 precisions at recall 0, 0.1, ..., 1 (VOC07), or the area under the
  monotone precision envelope (VOC2010 and later, ``voc07=False``); a class without
  (non-difficult) ground truth has AP NaN and is left out of the mAP.

Detections are ``MultiBoxDetection`` rows ``[class_id, score, xmin, ymin, xmax, ymax]`` with
corners in [0, 1] of the network input, which is the whole image resized without keeping the
aspect ratio: ``pixel_detections`` scales them back by the image's own width and height.
Ground truths are label rows ``[class, xmin, ymin, xmax, ymax, difficult]`` in pixels (0-based,
as the annotation readers give them).
"""
import numpy as np

__all__ = ['pixel_detections', 'VOCEvaluator', 'average_precision', 'format_ap_table', 'coco_ap']


def pixel_detections(rows, width, height):
    """The rows with a class (``class_id >= 0``) of one image's ``(N, 6)`` detections, corners
    scaled from [0, 1] to pixels of a ``width`` x ``height`` image; float64 ``(K, 6)``."""
    rows = np.asarray(rows, dtype=np.float64)
    found = rows[rows[:, 0] >= 0].copy()
    found[:, (2, 4)] *= width
    found[:, (3, 5)] *= height
    return found


def pixel_iou(box, boxes):
    """IoU of one ``[xmin, ymin, xmax, ymax]`` box with each row of ``boxes`` (K, 4), VOC's
    inclusive-pixel convention: a box spans ``xmax - xmin + 1`` pixels."""
    inner_w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]) + 1
    inner_h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]) + 1
    inter = np.where((inner_w > 0) & (inner_h > 0), inner_w * inner_h, 0.0)
    area = (box[2] - box[0] + 1) * (box[3] - box[1] + 1)
    areas = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area + areas - inter)


def average_precision(recall, precision, voc07=True):
    """VOC07 11-point AP, or the area under the precision envelope (``voc07=False``)."""
    if voc07:  # np.arange's thresholds (0.30000000000000004...), as GluonCV and the devkit's ports
        return float(np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0
                              for t in np.arange(0.0, 1.1, 0.1)]))
    recall = np.concatenate([[0.0], recall, [1.0]])
    envelope = np.maximum.accumulate(np.concatenate([[0.0], precision, [0.0]])[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * envelope[steps + 1]))


class VOCEvaluator:
    """Collects one image at a time (``add``); ``summary()`` gives per-class AP and the mAP.

    ``count_difficult=True`` scores difficult objects as ordinary ones (mxnet-ssd's
    ``--use-difficult``); the devkit ignores them.
    """

    def __init__(self, class_names, voc07=True, iou_thresh=0.5, count_difficult=False):
        self.class_names = list(class_names)
        self.voc07, self.iou_thresh, self.count_difficult = voc07, iou_thresh, count_difficult
        self._images = []  # (detections (K, 6), ground truth (G, 6)) in pixels

    def add(self, detections, truth):
        """One image: ``detections`` (K, 6) pixel rows of ``pixel_detections``; ``truth`` (G, 6)
        pixel rows ``[class, xmin, ymin, xmax, ymax, difficult]`` (padding rows -1 are dropped)."""
        truth = np.asarray(truth, dtype=np.float64).reshape(-1, 6)
        truth = truth[truth[:, 0] >= 0].copy()
        if self.count_difficult:
            truth[:, 5] = 0
        self._images.append((np.asarray(detections, dtype=np.float64).reshape(-1, 6), truth))

    def curves(self):
        """``{class_name: (recall, precision)}`` NumPy arrays of each class with objects to find."""
        return {name: curve for name, curve in
                ((name, self._class_curve(k)) for k, name in enumerate(self.class_names)) if curve is not None}

    def summary(self):
        """``[(class_name, AP), ..., ('mAP', value)]``; a class without ground truth has AP NaN."""
        curves = self.curves()
        values = [average_precision(*curves[name], self.voc07) if name in curves else float('nan')
                  for name in self.class_names]
        found = [v for v in values if not np.isnan(v)]
        return list(zip(self.class_names, values)) + [('mAP', float(np.mean(found)) if found else float('nan'))]

    def _class_curve(self, class_id):
        truths = [t[t[:, 0] == class_id] for _, t in self._images]
        to_find = sum(int((t[:, 5] == 0).sum()) for t in truths)
        if to_find == 0:
            return None
        found = [(image, row) for image, (d, _) in enumerate(self._images) for row in d[d[:, 0] == class_id]]
        order = sorted(range(len(found)), key=lambda i: -found[i][1][1])  # stable: ties keep image order
        claimed = [np.zeros(len(t), dtype=bool) for t in truths]
        true_pos, false_pos = np.zeros(len(found)), np.zeros(len(found))
        for rank, i in enumerate(order):
            image, row = found[i]
            truth = truths[image]
            overlaps = pixel_iou(row[2:6], truth[:, 1:5]) if len(truth) else np.zeros(0)
            best = int(np.argmax(overlaps)) if len(overlaps) else -1
            if best < 0 or not overlaps[best] > self.iou_thresh:
                false_pos[rank] = 1
            elif truth[best, 5] == 0:  # a difficult object is neither found nor missed
                false_pos[rank], true_pos[rank] = claimed[image][best], not claimed[image][best]
                claimed[image][best] = True
        true_pos, false_pos = np.cumsum(true_pos), np.cumsum(false_pos)
        recall = true_pos / to_find
        precision = true_pos / np.maximum(true_pos + false_pos, np.finfo(np.float64).eps)
        return recall, precision


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
