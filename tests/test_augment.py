"""ssd.augment gives exactly GluonCV's SSD training augmentation (same random draws, same results)."""
import random

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms.experimental import bbox as gluoncv_bbox
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

from ssd import augment
from ssd.dataset import MEAN, STD


def random_label(rng, width, height, count):
    """``count`` float32 rows [xmin, ymin, xmax, ymax, class, difficult]; some degenerate."""
    x0, y0 = rng.uniform(0, width - 2, count), rng.uniform(0, height - 2, count)
    x1, y1 = x0 + rng.uniform(0, width / 2, count), y0 + rng.uniform(0, height / 2, count)
    if count:
        x1[0] = x0[0]  # a zero-width box
        x0[-1], y0[-1], x1[-1], y1[-1] = 0, 0, width, height  # the whole image
    return np.stack([x0, y0, x1, y1, rng.randint(0, 4, count), np.zeros(count)], axis=1).astype(np.float32)


def seed_both(seed):
    np.random.seed(seed)
    random.seed(seed)


@pytest.mark.parametrize('seed', range(300))
def test_crop_sampler_matches_gluoncv_and_its_random_draws(seed):
    rng = np.random.RandomState(seed)
    width, height = int(rng.randint(40, 900)), int(rng.randint(40, 900))
    label = random_label(rng, width, height, count=seed % 7)  # 0..6 boxes
    if seed % 5 == 0:  # integer-valued coordinates: IoU ties with the bounds are likely
        label[:, :4] = np.round(label[:, :4] / 10) * 10
    seed_both(seed)
    expected_boxes, expected_crop = gluoncv_bbox.random_crop_with_constraints(label.copy(), (width, height))
    expected_state = (np.random.randint(1 << 30), random.random())
    seed_both(seed)
    boxes, crop = augment.random_crop_with_constraints(label.copy(), (width, height))
    assert crop == expected_crop
    np.testing.assert_array_equal(boxes, expected_boxes)
    assert (np.random.randint(1 << 30), random.random()) == expected_state


@pytest.mark.parametrize('seed', range(12))
def test_augmentation_matches_gluoncv_ssd_train_transform(seed):
    rng = np.random.RandomState(100 + seed)
    height, width = int(rng.randint(60, 300)), int(rng.randint(60, 300))
    image = rng.randint(0, 256, (height, width, 3)).astype(np.uint8)
    label = random_label(rng, width, height, count=seed % 4)
    seed_both(seed)
    gluoncv_transform = SSDDefaultTrainTransform(96, 96, mean=MEAN, std=STD)
    expected_image, expected_label = gluoncv_transform(mx.nd.array(image, dtype='uint8'), label.copy())
    seed_both(seed)
    ours = augment.SSDTrainAugment(96, 96, mean=MEAN, std=STD)
    result_image, result_label = ours(mx.nd.array(image, dtype='uint8'), label.copy())
    np.testing.assert_array_equal(result_image.asnumpy(), expected_image.asnumpy())
    np.testing.assert_array_equal(result_label, expected_label)
    assert result_image.shape == (3, 96, 96)
