"""VOC AP as the VOC devkit scores it: pixels of the original image, difficult objects ignored.

``devkit_ap`` below is an independent scorer written from the devkit's rules (``VOCevaldet.m``):
per class, all detections sorted by score, each matched greedily to the ground truth it
overlaps most in its image, IoU strictly above the threshold, one detection per ground truth,
difficult objects neither found nor missed, boxes ``xmax - xmin + 1`` pixels wide.
"""
import numpy as np
import pytest
from gluoncv.utils.metrics.voc_detection import VOC07MApMetric

from ssd.inference.evaluation import VOCEvaluator, average_precision, pixel_detections, pixel_iou


def devkit_ap(detections, truths, class_id, overlap=0.5, voc07=True):
    """AP of ``class_id``. ``detections``/``truths``: per image, pixel rows ``[cls, score, x1, y1, x2, y2]``
    and ``[cls, x1, y1, x2, y2, difficult]``."""
    gt = [t[t[:, 0] == class_id] for t in truths]
    used = [[False] * len(g) for g in gt]
    positives = sum(int(np.sum(g[:, 5] == 0)) for g in gt)
    entries = [(image, d) for image, ds in enumerate(detections) for d in ds if d[0] == class_id]
    scores = np.array([d[1] for _, d in entries])
    tp, fp = [], []
    for k in np.argsort(-scores, kind='stable'):
        image, d = entries[k]
        best, best_j = -np.inf, -1
        for j, g in enumerate(gt[image]):
            iw = min(d[4], g[3]) - max(d[2], g[1]) + 1
            ih = min(d[5], g[4]) - max(d[3], g[2]) + 1
            if iw > 0 and ih > 0:
                inter = iw * ih
                union = (d[4] - d[2] + 1) * (d[5] - d[3] + 1) + (g[3] - g[1] + 1) * (g[4] - g[2] + 1) - inter
                if inter / union > best:
                    best, best_j = inter / union, j
        hit = miss = 0
        if best > overlap:
            if gt[image][best_j][5] == 0:
                if used[image][best_j]:
                    miss = 1
                else:
                    hit, used[image][best_j] = 1, True
        else:
            miss = 1
        tp.append(hit)
        fp.append(miss)
    if positives == 0:
        return float('nan')
    tp, fp = np.cumsum(tp, dtype=float), np.cumsum(fp, dtype=float)
    rec = tp / positives
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if voc07:
        total = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            total += (np.max(prec[rec >= t]) if np.sum(rec >= t) > 0 else 0.0) / 11
        return total
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(len(mpre) - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def score(detections, truths, class_names, **options):
    evaluator = VOCEvaluator(class_names, **options)
    for found, truth in zip(detections, truths):
        evaluator.add(found, truth)
    return dict(evaluator.summary())


# Image 1: a 10x10-pixel object at pixels 10..19, detected 4 pixels off (score 0.9): the boxes
# share 6x6 of their 10x10 pixels, IoU 36 / (100 + 100 - 36) = 0.22, a false positive.
# Image 2: an object at 50..69 found exactly (score 0.8), and a difficult object found (0.7).
SMALL_TRUTH = [np.array([[0, 10, 10, 19, 19, 0]], float),
               np.array([[0, 50, 50, 69, 69, 0], [0, 5, 5, 30, 30, 1]], float)]
SMALL_FOUND = [np.array([[0, 0.9, 14, 14, 23, 23]], float),
               np.array([[0, 0.8, 50, 50, 69, 69], [0, 0.7, 5, 5, 30, 30]], float)]


@pytest.mark.unit
@pytest.mark.parametrize('voc07, expected', [
    # ranked 0.9 (FP), 0.8 (TP), 0.7 (difficult: skipped); 2 objects to find (the difficult one
    # does not count): recall [0, 0.5], precision [0, 0.5]. VOC07: recall >= t for t = 0 ... 0.5,
    # 6 of the 11 points at precision 0.5: 6 * 0.5 / 11 = 3/11.
    (True, 3 / 11),
    # area: envelope 0.5 up to recall 0.5, then 0: 0.5 * 0.5 = 0.25
    (False, 0.25)])
@pytest.mark.unit
def test_small_boxes_are_scored_in_pixels_with_hand_computed_ap(voc07, expected):
    assert score(SMALL_FOUND, SMALL_TRUTH, ['circle'], voc07=voc07)['circle'] == pytest.approx(expected, abs=1e-15)


@pytest.mark.unit
def test_normalized_boxes_would_have_inflated_the_same_case_to_ap_1():
    """The former scoring: [0, 1] corners (here / 100) into GluonCV's metric, whose + 1 pixel
    swells both boxes of image 1 to 1.09 wide: IoU 1.05^2 / (2 * 1.09^2 - 1.05^2) = 0.87, a hit."""
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=['circle'])
    for found, truth in zip(SMALL_FOUND, SMALL_TRUTH):
        metric.update(found[None, :, 2:] / 100, found[None, :, 0], found[None, :, 1],
                      truth[None, :, 1:5] / 100, truth[None, :, 0], truth[None, :, 5])
    assert dict(zip(*metric.get()))['circle'] == pytest.approx(1.0)


@pytest.mark.unit
def test_pixel_iou_counts_inclusive_pixels():
    # 10x10 pixels each, 6x6 shared: 36 / 164
    assert pixel_iou(np.array([14., 14, 23, 23]), np.array([[10., 10, 19, 19]]))[0] == pytest.approx(36 / 164)
    assert pixel_iou(np.array([0., 0, 9, 9]), np.array([[10., 0, 19, 9]]))[0] == 0  # touching, no shared pixel


@pytest.mark.unit
def test_pixel_detections_scale_by_each_images_own_size_and_drop_empty_rows():
    rows = np.array([[1, 0.9, 0.1, 0.2, 0.5, 1.0], [-1, -1, -1, -1, -1, -1], [0, 0.5, 0, 0, 1, 1]], np.float32)
    found = pixel_detections(rows, width=200, height=100)
    np.testing.assert_allclose(found, [[1, 0.9, 20, 20, 100, 100], [0, 0.5, 0, 0, 200, 100]], rtol=1e-6)


@pytest.mark.unit
def test_average_precision_of_a_perfect_and_an_empty_ranking():
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0
    assert average_precision(np.array([0.0, 0.0]), np.array([0.0, 0.0]), voc07=False) == 0.0


def random_images(rng, count, classes, size=(320, 240)):
    """Random ground truths (some difficult) and detections near them (some duplicates, some stray)."""
    detections, truths = [], []
    for _ in range(count):
        objects = []
        for _ in range(rng.randint(0, 5)):
            x1, y1 = rng.uniform(0, size[0] - 20), rng.uniform(0, size[1] - 20)
            w, h = rng.uniform(4, 60, 2)
            objects.append([rng.randint(classes), x1, y1, min(x1 + w, size[0] - 1), min(y1 + h, size[1] - 1),
                            float(rng.rand() < 0.15)])
        truth = np.array(objects, float).reshape(-1, 6)
        found = []
        for obj in truth:
            for _ in range(rng.randint(0, 3)):  # 0, 1 or 2 detections of an object: misses, duplicates
                jitter = rng.normal(0, 4, 4)
                found.append([obj[0] if rng.rand() < 0.9 else rng.randint(classes), rng.rand(), *(obj[1:5] + jitter)])
        for _ in range(rng.randint(0, 3)):
            x1, y1 = rng.uniform(0, size[0] - 30, 2)
            found.append([rng.randint(classes), rng.rand() * 0.6, x1, y1, x1 + 25, y1 + 20])
        detections.append(np.array(found, float).reshape(-1, 6))
        truths.append(truth)
    return detections, truths


@pytest.mark.parity
@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('voc07', [True, False])
def test_equals_an_independent_devkit_scorer(seed, voc07):
    rng = np.random.RandomState(seed)
    names = ['a', 'b', 'c']
    detections, truths = random_images(rng, 25, len(names))
    for overlap in (0.5, 0.7):
        ours = score(detections, truths, names, voc07=voc07, iou_thresh=overlap)
        expected = [devkit_ap(detections, truths, k, overlap, voc07) for k in range(len(names))]
        for name, value in zip(names, expected):
            assert ours[name] == pytest.approx(value, abs=1e-12, nan_ok=True)
        assert ours['mAP'] == pytest.approx(np.nanmean(expected), abs=1e-12)


@pytest.mark.parity
@pytest.mark.parametrize('seed', range(3))
def test_equals_gluoncvs_voc07_metric_fed_pixels(seed):
    """GluonCV's metric (random scores: no ties; IoU never exactly at the threshold) agrees."""
    rng = np.random.RandomState(100 + seed)
    names = ['a', 'b', 'c']
    detections, truths = random_images(rng, 25, len(names))
    metric = VOC07MApMetric(iou_thresh=0.5, class_names=names)
    for found, truth in zip(detections, truths):
        metric.update(found[None, :, 2:], found[None, :, 0], found[None, :, 1], truth[None, :, 1:5],
                      truth[None, :, 0], truth[None, :, 5])
    theirs = dict(zip(*metric.get()))
    ours = score(detections, truths, names)
    for name in names + ['mAP']:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-12, nan_ok=True)


@pytest.mark.unit
def test_count_difficult_scores_difficult_objects_as_ordinary_ones():
    # the difficult object of image 2 now counts and is found: ranked FP, TP, TP of 3 objects,
    # recall [0, 1/3, 2/3], precision [0, 1/2, 2/3]: VOC07 points t = 0..0.6 -> 2/3, 7 of them
    # (recall 2/3 >= 0.6), t = 0.7..1 -> 0: 7 * (2/3) / 11 = 14/33
    result = score(SMALL_FOUND, SMALL_TRUTH, ['circle'], count_difficult=True)
    assert result['circle'] == pytest.approx(14 / 33, abs=1e-15)


@pytest.mark.unit
def test_a_class_without_objects_has_ap_nan_and_is_left_out_of_the_map():
    result = score(SMALL_FOUND, SMALL_TRUTH, ['circle', 'cross'])
    assert np.isnan(result['cross']) and result['mAP'] == pytest.approx(3 / 11)
