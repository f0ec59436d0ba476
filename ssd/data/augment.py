"""GluonCV's SSD training augmentation, with a faster drop-in for its IoU-constrained crop sampler.

:class:`SSDTrainAugment` runs the steps of GluonCV's ``SSDDefaultTrainTransform`` (without
targets) with GluonCV's own functions: photometric distortion, zoom-out expansion, the SSD crop,
resize with a random interpolation, horizontal flip, ``to_tensor`` and ``normalize``. Only the
crop sampler differs: :func:`random_crop_with_constraints` gives exactly GluonCV's
``experimental.bbox.random_crop_with_constraints`` results and leaves both random generators in
the same state (tests compare them). GluonCV's version calls numpy's ``bbox_iou`` for each of
up to 300 trials per image: that was two thirds of a loader worker's time per image. Here the
IoUs of a trial are computed with Python floats, in GluonCV's precision: float32 box areas, and
float64 for everything else.

Boxes: ``(K, 4+)`` pixel corners ``[xmin, ymin, xmax, ymax, ...]``; extra columns pass through.
"""
import random

import mxnet as mx
import numpy as np
from gluoncv.data.transforms import bbox as gbbox, image as gimage
from gluoncv.data.transforms.experimental import image as eimage
from gluoncv.utils import bbox_iou

__all__ = ['SSDTrainAugment', 'random_crop_with_constraints']

# the SSD paper's sampler: (min IoU, max IoU) with every ground truth; None means no bound
_CONSTRAINTS = ((0.1, None), (0.3, None), (0.5, None), (0.7, None), (0.9, None), (None, 1))


class SSDTrainAugment:
    """``(HWC uint8 image, (K, 6) label) -> ((3, S, S) float32 tensor, (K', 6) label)``.

    The same steps and random draws as GluonCV's ``SSDDefaultTrainTransform(width, height,
    mean=mean, std=std)`` without anchors; labels are ``[xmin, ymin, xmax, ymax, class, ...]``
    in pixels, returned in pixels of the ``width`` x ``height`` output.

    ``max_expand`` is the largest zoom-out ratio (GluonCV's ``random_expand`` ``max_ratio``):
    with its preset's 4 these steps are GluonCV's exactly; <= 1 never zooms out.
    """

    def __init__(self, width, height, mean, std, max_expand=4.0):
        self.width, self.height, self.mean, self.std = width, height, mean, std
        self.max_expand = max_expand

    def __call__(self, image, label):
        image = eimage.random_color_distort(image)
        if np.random.uniform(0, 1) > 0.5:  # zoom out with probability 0.5
            image, expand = gimage.random_expand(image, max_ratio=self.max_expand,
                                                 fill=[m * 255 for m in self.mean])
            label = gbbox.translate(label, x_offset=expand[0], y_offset=expand[1])
        height, width, _ = image.shape
        label, (x0, y0, width, height) = random_crop_with_constraints(label, (width, height))
        image = mx.image.fixed_crop(image, x0, y0, width, height)
        image = gimage.imresize(image, self.width, self.height, interp=np.random.randint(0, 5))
        label = gbbox.resize(label, (width, height), (self.width, self.height))
        image, flips = gimage.random_flip(image, px=0.5)
        label = gbbox.flip(label, (self.width, self.height), flip_x=flips[0])
        image = mx.nd.image.normalize(mx.nd.image.to_tensor(image), mean=self.mean, std=self.std)
        return image, label.astype(image.dtype)


def random_crop_with_constraints(bbox, size, min_scale=0.3, max_scale=1, max_aspect_ratio=2, max_trial=50):
    """GluonCV's SSD crop sampler: ``(cropped boxes, (x, y, width, height))``; ``size`` is (w, h).

    For each constraint, up to ``max_trial`` random crops are drawn until one has an IoU with
    every box inside the bounds; one of the found crops (or the whole image) is picked, and
    boxes whose centre falls outside it are dropped.
    """
    width, height = size
    candidates = [(0, 0, width, height)]
    box_areas = [float(a) for a in np.prod(bbox[:, 2:4] - bbox[:, :2], axis=1)]  # float32, as GluonCV
    corners = [tuple(float(v) for v in row) for row in bbox[:, :4]]
    for min_iou, max_iou in _CONSTRAINTS:
        min_iou = -np.inf if min_iou is None else min_iou
        max_iou = np.inf if max_iou is None else max_iou
        for _ in range(max_trial):
            scale = random.uniform(min_scale, max_scale)
            aspect_ratio = random.uniform(max(1 / max_aspect_ratio, scale * scale),
                                          min(max_aspect_ratio, 1 / (scale * scale)))
            crop_h = int(height * scale / np.sqrt(aspect_ratio))
            crop_w = int(width * scale * np.sqrt(aspect_ratio))
            crop_t = random.randrange(height - crop_h)
            crop_l = random.randrange(width - crop_w)
            crop = (crop_l, crop_t, crop_l + crop_w, crop_t + crop_h)
            if len(bbox) == 0:  # GluonCV returns the first crop at once
                return bbox, (crop_l, crop_t, crop_w, crop_h)
            ious = _crop_ious(corners, box_areas, crop, bbox)
            if min_iou <= min(ious) and max(ious) <= max_iou:
                candidates.append((crop_l, crop_t, crop_w, crop_h))
                break
    while candidates:
        crop = candidates.pop(np.random.randint(0, len(candidates)))
        cropped = gbbox.crop(bbox, crop, allow_outside_center=False)
        if cropped.size >= 1:
            return cropped, crop
    return bbox, (0, 0, width, height)


def _crop_ious(corners, box_areas, crop, bbox):
    """IoU of each box with the integer ``crop`` corners, bit-equal to GluonCV's ``bbox_iou``."""
    left, top, right, bottom = crop
    crop_area = (right - left) * (bottom - top)
    ious = []
    for (x0, y0, x1, y1), box_area in zip(corners, box_areas):
        inter_w, inter_h = min(x1, right) - max(x0, left), min(y1, bottom) - max(y0, top)
        inter = inter_w * inter_h * (1.0 if (inter_w > 0 and inter_h > 0) else 0.0)
        union = box_area + crop_area - inter
        if not union:  # numpy would give NaN or inf here: let it
            return list(bbox_iou(bbox, np.array([crop]))[:, 0])
        ious.append(inter / union)
    return ious
