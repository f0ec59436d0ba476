"""MultiBoxTarget block vs the native CPU op ``mx.nd.contrib.MultiBoxTarget`` (the oracle).

Contents: hand-computed golden values; a seeded random parity suite (every parameter and shape
varied, outputs compared bit for bit, a native error must be ours too, with the same cause);
hand-made edge cases of docs/ops-semantics.md §9; imperative == hybridized == exported symbol;
gradients; errors.
"""
import json
import re

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon, nd

import multibox
from multibox import matcher, mining
from multibox.target import MultiBoxTarget
from conftest import assert_same

pytestmark = pytest.mark.parity

NATIVE_DEFAULTS = dict(overlap_threshold=0.5, ignore_label=-1.0, negative_mining_ratio=-1.0,
                       negative_mining_thresh=0.5, minimum_negative_samples=0,
                       variances=(0.1, 0.1, 0.2, 0.2))


# ------------------------------------------------------------------------------------------
# helpers

def native(anchor, label, cls_pred, **params):
    """Native outputs as numpy arrays, or the MXNetError it raises."""
    try:
        outs = mx.nd.contrib.MultiBoxTarget(nd.array(anchor), nd.array(label),
                                            nd.array(cls_pred), **params)
        return [o.asnumpy() for o in outs]
    except mx.base.MXNetError as err:
        return err


def ours(anchor, label, cls_pred, hybridize=False, **params):
    block = MultiBoxTarget(**params)
    if hybridize:
        block.hybridize(static_alloc=True)
    return [o.asnumpy() for o in block(nd.array(anchor), nd.array(label), nd.array(cls_pred))]


_SHORTAGE_COUNTS = re.compile(r'temp\.size\(\) >= num_negative \((\d+) vs\. (\d+)\)')


def _shortage_message(native_text):
    """A shortage names its numbers: native ``(found vs. wanted)`` are our candidates and
    negatives."""
    found, wanted = _SHORTAGE_COUNTS.search(native_text).groups()
    return (rf'hard negative mining of image \d+ needs {wanted} negatives \(.*\) but only '
            rf'{found} anchors are candidates')


# cause: (the native CHECK text, our ValueError's message as a regex, from the native text);
# see docs/ops-semantics.md §5
NATIVE_CAUSES = {
    'padding': ('== -1.0f', lambda native_text: r'label of image \d+: the first padding row '
                                                r'\(class -1\) must have coordinates -1'),
    'mining_thresh': ('negative_mining_thresh > 0',
                      lambda native_text: r'negative_mining_thresh=\S+ must be > 0'),
    'shortage': ('temp.size() >= num_negative', _shortage_message),
}


def native_cause(error):
    """``(cause, pattern)`` of a native MXNetError: its name and the regex our message matches."""
    text = str(error)
    for cause, (check, message) in NATIVE_CAUSES.items():
        if check in text:
            return cause, message(text)
    raise AssertionError(f"a native error that MultiBoxTarget does not reproduce: {text[:400]}")


def check_parity(anchor, label, cls_pred, hybridize=False, **params):
    """Our outputs, equal to the native op's; or, where the native op fails, our ValueError,
    which must name the same cause."""
    expected = native(anchor, label, cls_pred, **params)
    if isinstance(expected, Exception):
        _, pattern = native_cause(expected)
        with pytest.raises(ValueError, match=pattern) as raised:
            ours(anchor, label, cls_pred, hybridize=hybridize, **params)
        return raised.value
    got = ours(anchor, label, cls_pred, hybridize=hybridize, **params)
    assert_same(got, expected, context=str(params))
    return got


def f32(x):
    return np.asarray(x, dtype=np.float32)


def reference_bipartite(anchor, label):
    """Native bipartite stage in NumPy: per anchor ``(B, N)`` its gt or -1.

    docs/ops-semantics.md §3.4 step 2.
    """
    result = -np.ones((label.shape[0], anchor.shape[1]), np.int64)
    for b in range(label.shape[0]):
        classes = label[b, :, 0]
        count = int(np.argmax(classes == -1)) if (classes == -1).any() else len(classes)
        iou = nd.contrib.box_iou(nd.array(label[b, :count, 1:5]), nd.array(anchor[0]),
                                 format='corner').asnumpy() if count else np.zeros((0, 1))
        iou = np.where(np.isnan(iou), -1, iou)  # NaN never wins (iou > best is false)
        while iou.size:
            best = iou.max()
            if not best > np.float32(1e-6):
                break
            gts, anchors = np.nonzero(iou == best)
            first = np.lexsort((gts, anchors))[0]  # lowest anchor, then lowest gt
            gt, a = gts[first], anchors[first]
            result[b, a] = gt
            iou[gt, :] = -1
            iou[:, a] = -1
    return result


def our_bipartite(anchor, label):
    """The block's bipartite stage: per anchor ``(B, N)`` gt or -1, and per image ``inexact``."""
    classes = nd.array(label[:, :, 0])
    valid, _ = matcher.valid_gts(nd, classes)
    boxes = matcher.sanitize_boxes(nd, nd.array(label[:, :, 1:5]), nd.expand_dims(valid, 2))
    anchors = matcher.pad_anchors(nd, matcher.sanitize_boxes(nd, nd.array(anchor)))
    bipartite_gt, _, _, inexact = matcher.match(nd, matcher.iou_matrix(nd, boxes, anchors), valid)
    return bipartite_gt.asnumpy()[:, :anchor.shape[1]], inexact.asnumpy()


def grid_anchors(size, scales=(0.3,), ratios=(1.0,)):
    data = nd.zeros((1, 1, size, size))
    return nd.contrib.MultiBoxPrior(data, sizes=scales, ratios=ratios).asnumpy()


def logits(rs, batch, classes, num, ties=False):
    x = rs.randn(batch, classes, num) * rs.choice([0.5, 2.0, 5.0])
    if ties:  # few distinct values: many equal background probabilities
        x = np.round(x)
    return f32(x)


# ------------------------------------------------------------------------------------------
# golden values

def test_mxnet_unit_test_golden():
    """apache/mxnet test_multibox_target_op: anchor 0 positive by bipartite, anchor 1 mined."""
    anchor = f32([[[.1, .2, .3, .4], [.5, .6, .7, .8]]])
    cls_pred = f32(np.arange(10).reshape(1, 5, 2))
    label = f32([[[1, .1, .1, .5, .6]]])
    loc, mask, cls = ours(anchor, label, cls_pred, overlap_threshold=.5,
                          negative_mining_ratio=3, negative_mining_thresh=.4)
    np.testing.assert_allclose(loc, [[5.0, 2.5000005, 3.4657357, 4.581454, 0, 0, 0, 0]],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mask, [[1, 1, 1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(cls, [[2, 0]])


def test_hand_computed_threshold_and_encoding():
    """One gt equal to anchor 0 (zero offsets), anchor 1 at IoU 0.5 exactly, anchor 2 away."""
    anchor = f32([[[0, 0, .5, .5], [0, 0, .5, 1.], [.6, .6, 1, 1]]])
    label = f32([[[3, 0, 0, .5, .5], [-1, -1, -1, -1, -1]]])
    cls_pred = f32(np.zeros((1, 2, 3)))
    loc, mask, cls = ours(anchor, label, cls_pred, overlap_threshold=0.4)
    np.testing.assert_array_equal(cls, [[4, 4, 0]])  # IoU(anchor1, gt) = 0.5 > 0.4
    np.testing.assert_array_equal(mask, [[1] * 8 + [0] * 4])
    np.testing.assert_allclose(loc[0, :4], 0, atol=0)
    # anchor 1: center y .5 vs .25, height 1 vs .5 -> dy = -.25 / 1 / .1, dh = log(.5) / .2
    np.testing.assert_allclose(loc[0, 4:8], [0, -2.5, 0, np.log(.5) / .2], rtol=1e-6)
    _, _, cls = ours(anchor, label, cls_pred, overlap_threshold=0.5)
    np.testing.assert_array_equal(cls, [[4, 0, 0]])  # exactly at the threshold: not positive


# ------------------------------------------------------------------------------------------
# random parity suite

VARIANCES = [(0.1, 0.1, 0.2, 0.2), (1, 1, 1, 1), (0.2, 0.3, 0.5, 0.7), '(0.1,0.1,0.2,0.2)']


def random_params(rs):
    return dict(
        overlap_threshold=float(rs.choice([0.5, 0.5, 0.3, 0.7, 0.0, -0.2, 1.0, 1.5, 0.4999])),
        ignore_label=float(rs.choice([-1.0, 0.0, 5.0, -2.5])),
        negative_mining_ratio=float(rs.choice([-1.0, -1.0, 0.0, 0.5, 1.0, 1.5, 3.0, 10.0])),
        # > 0: a non-positive threshold always raises with mining, see ERROR_EVERY
        negative_mining_thresh=float(rs.choice([0.5, 0.5, 0.3, 0.9, 1.0, 1.01])),
        minimum_negative_samples=int(rs.choice([0, 3, 100])),
        variances=VARIANCES[rs.randint(len(VARIANCES))])


def random_anchors(rs, num):
    kind = rs.randint(4)
    if kind == 0:  # SSD-like grid, sometimes huge
        size = int(rs.choice([2, 5, 10, 20]))
        base = grid_anchors(size, scales=(0.2, 0.45), ratios=(1, 2, .5))
        return base[:, :num] if rs.rand() < 0.5 else base
    centers = rs.uniform(0, 1, (num, 2))
    sizes = rs.uniform(0.02, 0.6, (num, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    if kind == 2:  # quantized: many identical anchors / equal IoUs
        boxes = np.round(boxes * 4) / 4
    if kind == 3:  # a few degenerate (zero-width) and inverted anchors
        thin = rs.rand(num) < 0.1
        boxes[thin, 2] = boxes[thin, 0]
        flip = rs.rand(num) < 0.05
        boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    return f32(boxes[None])


def random_labels(rs, batch, rows, width, anchor):
    label = -np.ones((batch, rows, width))
    for b in range(batch):
        count = rs.randint(0, rows + 1)
        for i in range(count):
            if rs.rand() < 0.3:  # a copy of an anchor: exact IoU 1 and exact ties
                box = anchor[0, rs.randint(anchor.shape[1])]
            else:
                c = rs.uniform(0, 1, 2)
                s = rs.uniform(0.01, 0.7, 2)
                box = np.concatenate([c - s / 2, c + s / 2])
            if rs.rand() < 0.05:  # degenerate gt
                box = np.array([box[0], box[1], box[0], box[3]])
            label[b, i, 0] = rs.choice([0, 1, 2, 5, 19, -2, 1.5])
            label[b, i, 1:5] = box
            if width > 5:
                label[b, i, 5:] = rs.rand()
        if count < rows - 1 and rs.rand() < 0.2:  # valid-looking row after the padding: ignored
            label[b, count + 1, :5] = [1, .1, .1, .5, .5]
    return f32(label)


# Errors stay rare (a handful of the 320 cases) but every native error path is covered: on one
# seed in ERROR_EVERY mining gets a non-positive threshold, on another image 0's first padding
# row gets a real coordinate; mining shortages occur by themselves (low thresholds, ratio 10).
ERROR_EVERY, BAD_MINING_THRESH_SEED, BAD_PADDING_SEED = 128, 5, 37


def spoil_first_padding_row(label, image=0):
    """Give the first padding row of ``image`` (its last row if none) a coordinate other than -1."""
    pads = np.flatnonzero(label[image, :, 0] == -1)
    label[image, pads[0] if pads.size else -1, :5] = [-1, .25, -1, -1, -1]


def random_case(seed):
    rs = np.random.RandomState(seed)
    num = int(rs.choice([1, 2, 3, 7, 30, 100, 400, 1500, 3000], p=[.05, .05, .05, .1, .2, .25,
                                                                     .15, .1, .05]))
    anchor = random_anchors(rs, num)
    num = anchor.shape[1]
    batch = int(rs.choice([1, 1, 2, 3, 5]))
    rows = int(rs.choice([1, 2, 4, 8, 20, 40]))
    label = random_labels(rs, batch, rows, int(rs.choice([5, 6])), anchor)
    classes = int(rs.choice([1, 2, 3, 21]))
    cls_pred = logits(rs, batch, classes, num, ties=rs.rand() < 0.3)
    params = random_params(rs)
    if seed % ERROR_EVERY == BAD_MINING_THRESH_SEED:
        params.update(negative_mining_ratio=3.0, negative_mining_thresh=float(rs.choice([0, -.2])))
    if seed % ERROR_EVERY == BAD_PADDING_SEED:
        spoil_first_padding_row(label)
    return anchor, label, cls_pred, params


CHUNKS, PER_CHUNK = 10, 32  # 320 random cases


@pytest.mark.parametrize('chunk', range(CHUNKS))
def test_random_parity(chunk):
    for seed in range(chunk * PER_CHUNK, (chunk + 1) * PER_CHUNK):
        anchor, label, cls_pred, params = random_case(seed)
        check_parity(anchor, label, cls_pred, **params)
        if seed % 4 == 0:  # the bipartite stage alone, against a NumPy reference
            ours_gt, inexact = our_bipartite(anchor, label)
            np.testing.assert_array_equal(ours_gt, reference_bipartite(anchor, label))
            assert not inexact.any()


def test_random_suite_covers_every_error_path_rarely():
    """The random cases reach each native error, and outputs (not errors) are the rule."""
    causes = []
    for seed in range(CHUNKS * PER_CHUNK):
        anchor, label, cls_pred, params = random_case(seed)
        expected = native(anchor, label, cls_pred, **params)
        if isinstance(expected, Exception):
            causes.append(native_cause(expected)[0])
    assert set(causes) == set(NATIVE_CAUSES)
    assert len(causes) <= 16, causes  # 13 today: 3 + 3 designated, 7 shortages


@pytest.mark.parametrize('seed', [1000, 1001, 1002, 1003])
def test_random_parity_hybridized(seed):
    anchor, label, cls_pred, params = random_case(seed)
    check_parity(anchor, label, cls_pred, hybridize=True, **params)


def test_ssd300_scale_parity():
    """SSD300-like anchors (N = 8732-sized grid mix), 20 label rows, 21 classes, mining."""
    rs = np.random.RandomState(7)
    anchor = np.concatenate([grid_anchors(s, scales=(sc, sc * 1.4), ratios=(1, 2, .5))
                             for s, sc in ((38, .1), (19, .2), (10, .37), (5, .54), (3, .71),
                                           (1, .88))], axis=1)
    label = random_labels(rs, 4, 20, 5, anchor)
    cls_pred = logits(rs, 4, 21, anchor.shape[1])
    for params in (dict(negative_mining_ratio=3, negative_mining_thresh=.5), dict()):
        check_parity(anchor, label, cls_pred, hybridize=True, **params)


# ------------------------------------------------------------------------------------------
# edge cases (docs/ops-semantics.md §9)

def simple_anchors():
    return f32([[[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1],
                 [.1, .1, .6, .6], [.2, .2, .9, .9]]])


@pytest.mark.parametrize('params', [dict(), dict(negative_mining_ratio=3),
                                    dict(negative_mining_ratio=3, minimum_negative_samples=3),
                                    dict(negative_mining_ratio=3, negative_mining_thresh=0)])
def test_all_padding_labels_ignore_everything(params):
    anchor = simple_anchors()
    label = -np.ones((2, 3, 5), np.float32)
    got = check_parity(anchor, label, np.zeros((2, 3, 6), np.float32), ignore_label=7, **params)
    np.testing.assert_array_equal(got[2], 7)
    np.testing.assert_array_equal(got[1], 0)


def test_padding_row_in_the_middle_ends_the_gts():
    anchor = simple_anchors()
    label = f32([[[1, 0, 0, .5, .5], [-1, -1, -1, -1, -1], [2, .5, .5, 1, 1]]])
    got = check_parity(anchor, label, np.zeros((1, 2, 6), np.float32))
    assert got[2][0, 3] == 0  # the third row's anchor is not positive


def test_malformed_padding_row_raises():
    anchor = simple_anchors()
    label = f32([[[1, 0, 0, .5, .5], [-1, .2, -1, -1, -1]]])
    error = check_parity(anchor, label, np.zeros((1, 2, 6), np.float32))  # native fails too
    assert str(error).startswith('MultiBoxTarget: label of image 0: the first padding row')


def test_bipartite_only_match_and_nonlocal_assignment():
    """The example of docs/ops-semantics.md §3.4 step 2: A1 takes Y first, then X takes A0
    although A0's argmax is Y."""
    anchor = f32([[[0, 0, 1, 1], [0, 0, 1, .9]]])
    label = f32([[[0, 0, 0, 1, .6], [1, 0, 0, 1, .9]]])
    got = check_parity(anchor, label, np.zeros((1, 2, 2), np.float32), overlap_threshold=0.95)
    np.testing.assert_array_equal(got[2], [[1, 2]])
    tiny = f32([[[0, 0, .05, .05]]])  # IoU ~0.036 with the quadrant anchors
    got = check_parity(simple_anchors(), np.concatenate([np.ones((1, 1, 1)), tiny], 2),
                       np.zeros((1, 2, 6), np.float32))
    assert (got[2] == 2).sum() == 1


def test_iou_exactly_at_threshold():
    anchor = f32([[[0, 0, .5, .5], [0, 0, .5, 1.], [0, 0, 1, 1]]])
    label = f32([[[0, 0, 0, .5, .5]]])
    for threshold in (0.5, 0.4999, 0.25, 0.2500001):
        check_parity(anchor, label, np.zeros((1, 2, 3), np.float32),
                     overlap_threshold=threshold)


def test_identical_anchors_and_gts():
    """Lowest indices pair first; more identical anchors than the list size, and as many
    identical gts as the list holds (the most that is always exact)."""
    count = matcher.LIST_SIZE + 9
    anchor = f32(np.tile([[[.2, .2, .6, .6]]], (1, count, 1)))
    label = f32(np.tile([[[1, .2, .2, .6, .6]]], (2, matcher.LIST_SIZE, 1)))
    label[1, 5:] = -1
    for params in (dict(), dict(overlap_threshold=0), dict(overlap_threshold=1.0)):
        check_parity(anchor, label, np.zeros((2, 2, count), np.float32), **params)


def test_more_gts_than_anchors_and_list_size():
    rs = np.random.RandomState(3)
    anchor = random_anchors(np.random.RandomState(1), 7)
    label = random_labels(rs, 3, matcher.LIST_SIZE + 20, 5, anchor)
    label[:, :, 0] = 1  # no padding: all rows valid
    check_parity(anchor, label, np.zeros((3, 2, 7), np.float32))


def crowd(rs, rows, batch=1):
    """Near-identical gts around [.4, .4, .6, .6] on a 10x10 grid of 300 anchors."""
    anchor = grid_anchors(10, scales=(0.2, 0.3), ratios=(1, 2))
    jitter = rs.uniform(-0.01, 0.01, (batch, rows, 4))
    label = f32(np.concatenate([np.ones((batch, rows, 1)), [.4, .4, .6, .6] + jitter], axis=2))
    return anchor, label


def test_gts_crowding_the_same_anchors():
    """As many near-identical gts as the lists hold: matches reach deep into the lists."""
    rs = np.random.RandomState(5)
    anchor, label = crowd(rs, matcher.LIST_SIZE)
    check_parity(anchor, label, logits(rs, 1, 3, anchor.shape[1]), hybridize=True,
                 negative_mining_ratio=1, negative_mining_thresh=0.99)
    _, inexact = our_bipartite(anchor, label)
    assert not inexact.any()


@pytest.mark.parametrize('rows', [matcher.LIST_SIZE + 12, 3 * matcher.LIST_SIZE])
def test_beyond_the_list_bound_pairs_are_dropped_never_wrong(rows):
    """Documented bound: more than LIST_SIZE gts competing for the same anchors can exhaust a
    list. The image is then flagged inexact and keeps a subset of the native pairs."""
    rs = np.random.RandomState(6)
    anchor, crowded = crowd(rs, rows)
    identical = f32(np.tile([[[1, .2, .2, .6, .6]]], (1, rows, 1)))
    for anchor, label in ((anchor, crowded),
                          (f32(np.tile([[[.2, .2, .6, .6]]], (1, rows - 3, 1))), identical)):
        ours_gt, inexact = our_bipartite(anchor, label)
        assert inexact.tolist() == [1]
        expected = reference_bipartite(anchor, label)[0]
        matched = ours_gt[0] >= 0
        assert 0 < matched.sum() < (expected >= 0).sum()
        np.testing.assert_array_equal(ours_gt[0][matched], expected[matched])


def test_mining_ties_and_single_class():
    rs = np.random.RandomState(11)
    anchor = grid_anchors(20, scales=(0.1,))
    label = random_labels(rs, 2, 6, 5, anchor)
    label[:, 0] = [1, .3, .3, .5, .5]
    tied = f32(np.round(rs.randn(2, 3, anchor.shape[1])))
    for ratio in (1, 3, 10):
        check_parity(anchor, label, tied, negative_mining_ratio=ratio, negative_mining_thresh=.9)
        check_parity(anchor, label, np.zeros((2, 1, anchor.shape[1]), np.float32),
                     negative_mining_ratio=ratio, negative_mining_thresh=.9)


def test_mining_beyond_topk_selection_size():
    """num_neg larger than mining.MINE_LIST takes the full-sort branch."""
    rs = np.random.RandomState(12)
    anchor = grid_anchors(38, scales=(0.1, 0.14), ratios=(1, 2, .5))
    label = random_labels(rs, 2, 20, 5, anchor)
    label[:, 0] = [1, .1, .1, .9, .9]
    ratio = 2 * mining.MINE_LIST  # at least one positive -> num_neg > MINE_LIST
    check_parity(anchor, label, logits(rs, 2, 4, anchor.shape[1], ties=True),
                 negative_mining_ratio=ratio, negative_mining_thresh=1.0)


def test_mining_shortage_raises():
    # IoUs 1, .5, .5, 0: one positive, three negatives wanted, one candidate below 0.1
    anchor = f32([[[0, 0, .5, .5], [0, 0, 1, .5], [0, 0, .5, 1], [.6, .6, 1, 1]]])
    label = f32([[[1, 0, 0, .5, .5]]])
    params = dict(negative_mining_ratio=3, negative_mining_thresh=0.1)
    for hybridize in (False, True):  # native: "temp.size() >= num_negative (1 vs. 3)"
        error = check_parity(anchor, label, np.zeros((1, 2, 4), np.float32),
                             hybridize=hybridize, **params)
        assert 'image 0 needs 3 negatives' in str(error)
        assert 'only 1 anchors are candidates' in str(error)
        assert 'negative_mining_thresh=0.10000000149011612' in str(error)


def test_mining_threshold_not_positive_raises():
    anchor = simple_anchors()
    label = f32([[[1, 0, 0, .5, .5]], [[-1, -1, -1, -1, -1]]])
    params = dict(negative_mining_ratio=3, negative_mining_thresh=0)
    error = check_parity(anchor, label, np.zeros((2, 2, 6), np.float32), **params)
    assert 'negative_mining_thresh=0.0 must be > 0' in str(error)


def test_ratio_half_with_one_positive_gives_no_negatives():
    anchor = simple_anchors()
    label = f32([[[1, 0, 0, .5, .5]]])
    got = check_parity(anchor, label, np.zeros((1, 2, 6), np.float32),
                       negative_mining_ratio=0.5)
    assert (got[2] == 0).sum() == 0


def test_every_anchor_positive_with_mining():
    anchor = f32([[[0, 0, .5, .5], [.5, .5, 1, 1]]])
    label = f32([[[1, 0, 0, .5, .5], [2, .5, .5, 1, 1]]])
    got = check_parity(anchor, label, np.zeros((1, 2, 2), np.float32), negative_mining_ratio=3)
    np.testing.assert_array_equal(got[2], [[2, 3]])


def test_non_finite_boxes_are_never_matched():
    anchor = f32([[[0, 0, .5, .5], [np.nan, 0, .5, .5], [0, -np.inf, .5, np.inf], [.5, .5, 1, 1]]])
    label = f32([[[1, 0, 0, .5, .5], [2, np.nan, .5, 1, 1], [3, .5, .5, 1, 1]]])
    check_parity(anchor, label, np.zeros((1, 2, 4), np.float32))
    check_parity(anchor, label, np.zeros((1, 2, 4), np.float32), negative_mining_ratio=1,
                 negative_mining_thresh=.9)


def _mining_case():
    """Two images on a 10x10 grid: image 0 has two gts, image 1 none; finite logits."""
    rs = np.random.RandomState(21)
    anchor = grid_anchors(10, scales=(0.2,))
    label = f32([[[1, .3, .3, .5, .5], [0, .6, .1, .9, .4]], [[-1] * 5, [-1] * 5]])
    return anchor, label, logits(rs, 2, 3, anchor.shape[1])


@pytest.mark.parametrize('bad', ['nan', '+inf', 'all -inf'])
def test_mining_refuses_logits_that_give_nan_probabilities(bad):
    """NaN background probabilities cannot be ranked (the native sort order is unspecified for
    them): refused by name, imperatively, hybridized and inside a symbol graph."""
    anchor, label, cls_pred = _mining_case()
    candidate = 99  # far from both gts: a mining candidate of image 0
    if bad == 'nan':
        cls_pred[0, 2, candidate] = np.nan
    elif bad == '+inf':
        cls_pred[0, 1, candidate] = np.inf
    else:
        cls_pred[0, :, candidate] = -np.inf
    params = dict(negative_mining_ratio=3)
    for hybridize in (False, True):
        with pytest.raises(ValueError, match=rf'cls_pred of image 0 is NaN or infinite at anchor '
                                             rf'{candidate}, a hard negative mining candidate'):
            ours(anchor, label, cls_pred, hybridize=hybridize, **params)
    x = [mx.sym.var(n) for n in ('anchor', 'label', 'cls_pred')]
    graph = gluon.SymbolBlock(mx.sym.Group(list(MultiBoxTarget(**params)(*x))), x)
    with pytest.raises(mx.base.MXNetError, match='out of bound'):
        graph(*(nd.array(a) for a in (anchor, label, cls_pred)))[2].asnumpy()


def test_non_finite_logits_that_mining_never_ranks_match_native():
    """A -inf beside finite logits gives a finite probability; NaN at a positive anchor, in an
    image without gts or without mining is never ranked: all as native, bit for bit."""
    anchor, label, cls_pred = _mining_case()
    cls_pred[0, 1, 90:99] = -np.inf  # candidates with finite probabilities
    cls_pred[0, 0, 5] = -np.inf
    positive = int(np.flatnonzero(native(anchor, label, cls_pred, negative_mining_ratio=3)[2][0] > 0)[0])
    cls_pred[0, :, positive] = np.nan
    cls_pred[1, :, :50] = np.nan  # image 1 has no gt: no mining
    got = check_parity(anchor, label, cls_pred, negative_mining_ratio=3)
    assert (got[2][0] == 0).sum() > 0 and (got[2][0] > 0).sum() > 0
    check_parity(anchor, label, cls_pred, negative_mining_ratio=-1)
    cls_pred[0, 2, 99] = np.nan  # refused with mining, ignored without
    check_parity(anchor, label, cls_pred, negative_mining_ratio=-1)


# ------------------------------------------------------------------------------------------
# hybridize / export / gradient

def test_imperative_equals_hybridized_and_exported(tmp_path):
    anchor, label, cls_pred, _ = random_case(2024)
    params = dict(negative_mining_ratio=3, negative_mining_thresh=0.9, overlap_threshold=0.4)
    inputs = [nd.array(anchor), nd.array(label), nd.array(cls_pred)]
    block = MultiBoxTarget(**params)
    expected = [o.asnumpy() for o in block(*inputs)]
    block.hybridize(static_alloc=True)
    for _ in range(2):  # the cached graph is reused
        for exp, out in zip(expected, block(*inputs)):
            np.testing.assert_array_equal(out.asnumpy(), exp)
    prefix = str(tmp_path / 'target')
    block.export(prefix)
    assert json.load(open(prefix + '-symbol.json'))['nodes']
    loaded = gluon.SymbolBlock.imports(prefix + '-symbol.json', ['data0', 'data1', 'data2'])
    for exp, out in zip(expected, loaded(*inputs)):
        np.testing.assert_array_equal(out.asnumpy(), exp)


def test_symbolic_graph_raises_on_native_errors():
    """A symbol graph (run by plain MXNet as a SymbolBlock) fails where the native op fails."""
    x = [mx.sym.var(n) for n in ('anchor', 'label', 'cls_pred')]
    graph = gluon.SymbolBlock(mx.sym.Group(list(MultiBoxTarget()(*x))), x)
    anchor = nd.array(simple_anchors())
    good = nd.array(f32([[[1, 0, 0, .5, .5]]]))
    bad = nd.array(f32([[[1, 0, 0, .5, .5], [-1, 0, -1, -1, -1]]]))
    cls_pred = nd.zeros((1, 2, 6))
    assert graph(anchor, good, cls_pred)[2].asnumpy()[0, 0] == 2
    with pytest.raises(mx.base.MXNetError, match='out of bound'):
        graph(anchor, bad, cls_pred)[0].asnumpy()
    block = MultiBoxTarget()  # the block still works after a failure
    with pytest.raises(ValueError):
        block(anchor, bad, cls_pred)
    assert block(anchor, good, cls_pred)[2].asnumpy()[0, 0] == 2


def test_no_gradient_flows():
    anchor, label, cls_pred, _ = random_case(5)
    cls_pred = nd.array(cls_pred)
    cls_pred.attach_grad()
    block = MultiBoxTarget(negative_mining_ratio=3, negative_mining_thresh=1.0)
    block.hybridize(static_alloc=True)
    with autograd.record():
        loc, mask, cls = block(nd.array(anchor), nd.array(label), cls_pred)
        loss = (loc.sum() + mask.sum() + cls.sum()) * cls_pred.sum()
    loss.backward()
    # d/dx [const * sum(x)] = const: the targets are constants, not functions of cls_pred
    expected = (loc.sum() + mask.sum() + cls.sum()).asscalar()
    np.testing.assert_allclose(cls_pred.grad.asnumpy(), expected, rtol=1e-5)
    with autograd.record():
        total = sum(o.sum() for o in block(nd.array(anchor), nd.array(label), cls_pred))
    total.backward()
    np.testing.assert_array_equal(cls_pred.grad.asnumpy(), 0)


# ------------------------------------------------------------------------------------------
# parameters and input checks

def test_parameters_parsed_like_native():
    block = MultiBoxTarget(variances='(0.1,0.1,0.2,0.2)', overlap_threshold='0.5')
    assert block._variances == tuple(float(np.float32(v)) for v in (.1, .1, .2, .2))
    anchor, label, cls_pred, _ = random_case(9)
    check_parity(anchor, label, cls_pred, variances='(0.2, 0.2, 0.1, 0.1)',
                 overlap_threshold='0.45')


@pytest.mark.parametrize('params, match', [
    (dict(variances=(0.1, 0.2)), 'variances'),
    (dict(variances='(0.1,0.1,0.2)'), 'variances'),
    (dict(variances='abc'), 'variances'),
    (dict(overlap_threshold='x'), 'overlap_threshold'),
    (dict(ignore_label='?'), 'ignore_label'),
    (dict(negative_mining_ratio=''), 'negative_mining_ratio'),
    (dict(negative_mining_thresh='a'), 'negative_mining_thresh'),
    (dict(minimum_negative_samples='1.5'), 'minimum_negative_samples'),
])
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MultiBoxTarget(**params)


@pytest.mark.parametrize('shapes, match', [
    (((1, 6), (1, 1, 5), (1, 2, 6)), 'anchor'),
    (((2, 6, 4), (2, 1, 5), (2, 2, 6)), 'anchor'),
    (((1, 6, 5), (1, 1, 5), (1, 2, 6)), 'anchor'),
    (((1, 6, 4), (1, 1, 4), (1, 2, 6)), 'label'),
    (((1, 6, 4), (1, 5), (1, 2, 6)), 'label'),
    (((1, 6, 4), (1, 1, 5), (1, 2, 7)), 'cls_pred'),
    (((1, 6, 4), (1, 1, 5), (2, 6)), 'cls_pred'),
])
def test_invalid_input_shapes(shapes, match):
    arrays = [nd.zeros(s) for s in shapes]
    with pytest.raises(ValueError, match=match):
        MultiBoxTarget()(*arrays)


@pytest.mark.parametrize('dtype', ['float64', 'float16', 'int32'])
def test_only_float32_like_native(dtype):
    anchor, label, cls_pred = (nd.array(simple_anchors()), nd.array(f32([[[1, 0, 0, .5, .5]]])),
                               nd.zeros((1, 2, 6)))
    with pytest.raises(mx.base.MXNetError):
        mx.nd.contrib.MultiBoxTarget(anchor.astype(dtype), label, cls_pred).wait_to_read()
    with pytest.raises(TypeError, match='float32'):
        MultiBoxTarget()(anchor.astype(dtype), label, cls_pred)


# ------------------------------------------------------------------------------------------
# legacy symbol API: shape inference, Symbol.bind, Module

def test_symbol_infers_output_shapes():
    """No while_loop/cond in the graph: MXNet infers every shape (Module/bind need that)."""
    target = multibox.symbol.MultiBoxTarget(mx.sym.var('a'), mx.sym.var('l'), mx.sym.var('c'),
                                            negative_mining_ratio=3)
    args, outs, aux = target.infer_shape(a=(1, 100, 4), l=(2, 3, 5), c=(2, 4, 100))
    assert outs == [(2, 400), (2, 400), (2, 100)]
    assert args == [(1, 100, 4), (2, 3, 5), (2, 4, 100)] and aux == []
    assert target.list_arguments() == ['a', 'l', 'c']  # signature order, like the native op
    partial = multibox.symbol.MultiBoxTarget(mx.sym.var('a'), mx.sym.var('l'), mx.sym.var('c'))
    assert partial.infer_shape(a=(1, 7, 4), l=(3, 1, 6), c=(3, 2, 7))[1] == [(3, 28), (3, 28),
                                                                            (3, 7)]


def test_symbol_bind_matches_native():
    rs = np.random.RandomState(21)
    anchor, label, cls_pred, _ = random_case(77)
    params = dict(negative_mining_ratio=3, negative_mining_thresh=0.9)
    names = ('anchor', 'label', 'cls_pred')
    graph = multibox.symbol.MultiBoxTarget(*[mx.sym.var(n) for n in names], **params)
    args = {n: nd.array(x) for n, x in zip(names, (anchor, label, cls_pred))}
    executor = graph.bind(mx.cpu(), args)
    got = [o.asnumpy() for o in executor.forward()]
    assert_same(got, native(anchor, label, cls_pred, **params))


def ssd_training_graph(ops, classes=3):
    """A small mxnet-ssd style training graph: conv features, anchors, targets, losses."""
    data, label = mx.sym.var('data'), mx.sym.var('label')
    feature = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name='conv')
    anchors = multibox.symbol.MultiBoxPrior(feature, sizes=(0.3, 0.5), ratios=(1, 2),
                                            name='anchors')  # 3 per location
    cls = mx.sym.Convolution(feature, num_filter=classes * 3, kernel=(3, 3), pad=(1, 1),
                             name='cls')
    loc = mx.sym.Convolution(feature, num_filter=4 * 3, kernel=(3, 3), pad=(1, 1), name='loc')
    cls_pred = mx.sym.transpose(mx.sym.reshape(mx.sym.transpose(cls, (0, 2, 3, 1)),
                                               (0, -1, classes)), (0, 2, 1))
    loc_pred = mx.sym.Flatten(mx.sym.transpose(loc, (0, 2, 3, 1)))
    loc_target, loc_mask, cls_target = ops.MultiBoxTarget(
        anchors, label, cls_pred, overlap_threshold=.5, negative_mining_ratio=3,
        negative_mining_thresh=.5, name='target')
    cls_loss = mx.sym.SoftmaxOutput(cls_pred, cls_target, ignore_label=-1, use_ignore=True,
                                    multi_output=True, normalization='valid', name='cls_prob')
    loc_loss = mx.sym.MakeLoss(mx.sym.smooth_l1(loc_mask * (loc_pred - loc_target), scalar=1.0),
                               name='loc_loss')
    watched = [mx.sym.BlockGrad(x) for x in (loc_target, loc_mask, cls_target, cls_pred, anchors)]
    return mx.sym.Group([cls_loss, loc_loss] + watched)


def test_module_trains_on_two_contexts_like_native():
    """mx.mod.Module binds the graph on two contexts, runs forward_backward + update; the
    targets equal the native op's on the same inputs, and so do the updated weights."""
    batch, rs = 4, np.random.RandomState(8)
    label = -np.ones((batch, 5, 5), np.float32)
    for b in range(batch):
        for i in range(rs.randint(1, 5)):
            center, size = rs.uniform(0.2, 0.8, 2), rs.uniform(0.1, 0.5, 2)
            label[b, i] = [rs.randint(0, 2), *(center - size / 2), *(center + size / 2)]
    modules = []
    for ops in (multibox.symbol, mx.contrib.symbol):
        module = mx.mod.Module(ssd_training_graph(ops), data_names=['data'],
                               label_names=['label'], context=[mx.cpu(0), mx.cpu(1)])
        module.bind(data_shapes=[('data', (batch, 3, 8, 8))],
                    label_shapes=[('label', label.shape)])
        mx.random.seed(3)
        module.init_params(mx.init.Xavier())
        module.init_optimizer(optimizer='sgd', optimizer_params={'learning_rate': 0.1})
        modules.append(module)
    modules[1].set_params(*modules[0].get_params())
    for step in range(2):
        data = mx.io.DataBatch([nd.array(rs.rand(batch, 3, 8, 8))], [nd.array(label)])
        for module in modules:
            module.forward_backward(data)
            module.update()
        ours = [o.asnumpy() for o in modules[0].get_outputs()[2:]]
        loc_target, loc_mask, cls_target, cls_pred, anchors = ours
        expected = native(anchors[:1], label, cls_pred, overlap_threshold=.5,
                          negative_mining_ratio=3, negative_mining_thresh=.5)
        assert_same([loc_target, loc_mask, cls_target], expected, context=f'step {step}')
        assert (cls_target > 0).any() and (cls_target == 0).any()
        for o, n in zip(modules[0].get_outputs()[:5], modules[1].get_outputs()[:5]):
            np.testing.assert_array_equal(o.asnumpy(), n.asnumpy())
    for name, value in modules[0].get_params()[0].items():
        np.testing.assert_array_equal(value.asnumpy(), modules[1].get_params()[0][name].asnumpy(),
                                      err_msg=name)
