"""ssd.data.augment gives exactly GluonCV's SSD training augmentation (same random draws, same results)."""
import random

import mxnet as mx
import numpy as np
import pytest
from gluoncv.data.transforms import image as gimage
from gluoncv.data.transforms.experimental import bbox as gluoncv_bbox
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform

from ssd.data import augment
from ssd.data.dataset import MEAN, STD

pytestmark = pytest.mark.parity


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


@pytest.mark.parametrize('max_expand', [1.0, 1.5, 4.0])
def test_zoom_out_canvas_is_at_most_max_expand_times_the_image(monkeypatch, max_expand):
    canvases, expand = [], gimage.random_expand

    def spy(image, **kwargs):
        result = expand(image, **kwargs)
        canvases.append((image.shape[:2], result[0].shape[:2]))
        return result
    monkeypatch.setattr(augment.gimage, 'random_expand', spy)
    ours = augment.SSDTrainAugment(64, 64, mean=MEAN, std=STD, max_expand=max_expand)
    rng = np.random.RandomState(7)
    seed_both(7)
    for _ in range(40):
        image = mx.nd.array(rng.randint(0, 256, (50, 80, 3)), dtype='uint8')
        ours(image, random_label(rng, 80, 50, count=2))
    ratios = [(big[0] / small[0], big[1] / small[1]) for small, big in canvases]
    assert 10 < len(ratios) < 30  # zoom-out is tried with probability 0.5
    assert all(1 <= r <= max_expand for pair in ratios for r in pair)
    if max_expand > 1:
        assert max(r for pair in ratios for r in pair) > 1 + (max_expand - 1) / 2
