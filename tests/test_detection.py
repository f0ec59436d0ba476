"""MultiBoxDetection block vs the native ``mx.nd.contrib.MultiBoxDetection`` (the oracle).

Contents: hand-computed cases, docs/ops-semantics.md §9 edge cases, a seeded random parity suite
that varies every parameter and shape (and forces score ties and overlapping boxes),
hybridize/export, gradients, errors. Every comparison is on the whole (B, N, 6) output,
-1 rows included, and must be bit-exact (NaN == NaN).
"""
import json
import math

import mxnet as mx
import numpy as np
import pytest

from multibox.detection import MultiBoxDetection
from multibox.nms import below_threshold_text
from multibox.params import dmlc_float
from conftest import assert_same

pytestmark = pytest.mark.parity

PARAMS = ('clip', 'threshold', 'background_id', 'nms_threshold', 'force_suppress',
          'variances', 'nms_topk')


def native(cls_prob, loc_pred, anchor, **params):
    args = [mx.nd.array(x, dtype='float32') for x in (cls_prob, loc_pred, anchor)]
    return mx.nd.contrib.MultiBoxDetection(*args, **params).asnumpy()


def ours(cls_prob, loc_pred, anchor, hybridize=False, **params):
    block = MultiBoxDetection(**params)
    if hybridize:
        block.hybridize(static_alloc=True)
    args = [mx.nd.array(x, dtype='float32') for x in (cls_prob, loc_pred, anchor)]
    return block(*args).asnumpy()


def check(cls_prob, loc_pred, anchor, **params):
    expected = native(cls_prob, loc_pred, anchor, **params)
    assert_same(ours(cls_prob, loc_pred, anchor, **params), expected, repr(params))
    return expected


def inputs_from_boxes(probs, boxes):
    """cls_prob (1, C, N) from per-anchor probs (N, C); zero offsets so boxes == anchors."""
    probs = np.asarray(probs, dtype='float32')
    boxes = np.asarray(boxes, dtype='float32').reshape(1, -1, 4)
    return probs.T[None], np.zeros((1, boxes.shape[1] * 4), 'float32'), boxes


# --------------------------------------------------------------------------- hand-computed

def test_hand_computed_sort_and_per_class_nms():
    # anchors 0 and 1 overlap with IoU 0.81/1.0 = 0.81; anchor 2 is far away.
    probs = [[0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.3, 0.1, 0.6]]
    boxes = [[0.1, 0.1, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.05, 0.05]]
    out = check(*inputs_from_boxes(probs, boxes))
    f = np.float32
    expected = np.array([[[0, f(0.8), 0, 0, 1, 1],
                          [0, f(0.7), f(0.1), f(0.1), 1, 1],
                          [1, f(0.6), 0, 0, f(0.05), f(0.05)]]], 'float32')
    expected[0, 1, 0] = -1  # suppressed by row 0: IoU 0.81 >= 0.5, same class
    np.testing.assert_array_equal(out[..., :2], expected[..., :2])
    np.testing.assert_allclose(out, expected, atol=1e-6)  # decode rounds the corners


def test_hand_computed_threshold_and_compaction():
    probs = [[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.6, 0.4, 0.0]]
    boxes = [[0, 0, .1, .1], [.2, .2, .3, .3], [.5, .5, .6, .6]]
    out = check(*inputs_from_boxes(probs, boxes), threshold=0.4, nms_threshold=0)
    f = np.float32
    expected = np.array([[[0, f(.5), f(.2), f(.2), f(.3), f(.3)],
                          [0, f(.4), f(.5), f(.5), f(.6), f(.6)],
                          [-1] * 6]], 'float32')
    np.testing.assert_array_equal(out[..., :2], expected[..., :2])
    np.testing.assert_allclose(out, expected, atol=1e-6)  # decode rounds the corners


# --------------------------------------------------------------------------- edge cases (§9)

def test_score_exactly_at_threshold_is_kept():
    out = check(*inputs_from_boxes([[0.5, 0.5], [0.6, 0.4]], [[0, 0, .5, .5], [.5, .5, 1, 1]]),
                threshold=0.5)
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == -1 and out[0, 1, 1] == -1


@pytest.mark.parametrize('threshold', [0.95, 2.0, math.inf])
def test_threshold_above_every_score(threshold):
    out = check(*inputs_from_boxes([[0.1, 0.9], [0.2, 0.8]], [[0, 0, .5, .5], [.5, .5, 1, 1]]),
                threshold=threshold)
    assert (out == -1).all()


def test_background_only_class_gives_all_minus_one():
    out = check(np.full((2, 1, 7), 0.9, 'float32'), np.zeros((2, 28), 'float32'),
                np.tile(np.array([[0, 0, .5, .5]], 'float32'), (1, 7, 1)), threshold=-5)
    assert (out == -1).all()


def test_probabilities_not_above_minus_one_never_win():
    probs = np.array([[[0.3, 0.2]], [[-1, -3]], [[-1, np.nan]]], 'float32').reshape(1, 3, 2)
    out = check(probs, np.zeros((1, 8), 'float32'),
                np.array([[[0, 0, .5, .5], [.5, .5, 1, 1]]], 'float32'), threshold=-5)
    assert (out == -1).all()


@pytest.mark.parametrize('threshold', [-0.5, -math.inf, math.nan, 0.0])
def test_negative_and_special_thresholds(threshold):
    rng = np.random.RandomState(3)
    probs = np.round(rng.uniform(-1.2, 0.4, (2, 4, 30)) * 4).astype('float32') / 4
    probs[0, 2, 5] = np.nan
    check(probs, (rng.randn(2, 120) * 0.3).astype('float32'), random_anchors(rng, 30),
          threshold=threshold)


def test_equal_class_probabilities_pick_lowest_class():
    out = check(*inputs_from_boxes([[0.2, 0.4, 0.4], [0.0, 0.3, 0.3]],
                                   [[0, 0, .5, .5], [.6, .6, 1, 1]]))
    assert out[0, 0, 0] == 0 and out[0, 1, 0] == 0


def test_nan_probability_is_never_chosen():
    out = check(*inputs_from_boxes([[0.1, np.nan, 0.2], [0.1, 0.3, np.nan]],
                                   [[0, 0, .5, .5], [.6, .6, 1, 1]]))
    ids = {tuple(row[:2]) for row in out[0]}
    assert ids == {(0.0, np.float32(0.3)), (1.0, np.float32(0.2))}


def test_equal_scores_keep_anchor_order():
    n = 40  # more than 16 so that an unstable std::sort would show
    boxes = np.array([[i / n, 0, i / n + 0.01, 0.01] for i in range(n)], 'float32')
    probs = np.tile([[0.5, 0.5]], (n, 1))
    probs[::7, 1] = 0.25
    out = check(*inputs_from_boxes(probs, boxes))
    np.testing.assert_array_equal(out[0, :, 2], np.sort(out[0, :, 2][out[0, :, 1] == 0.5]).tolist()
                                  + out[0, :, 2][out[0, :, 1] == 0.25].tolist())


@pytest.mark.parametrize('nms_threshold', [0, -0.3, 1.01, 5])
def test_nms_disabled_keeps_anchor_order(nms_threshold):
    probs = [[0.1, 0.3], [0.2, 0.8], [0.9, 0.05], [0.0, 0.6]]
    boxes = [[0, 0, .5, .5]] * 4
    out = check(*inputs_from_boxes(probs, boxes), nms_threshold=nms_threshold)
    np.testing.assert_array_equal(out[0, :, 1], np.float32([0.3, 0.8, 0.05, 0.6]))


def test_nms_threshold_one_suppresses_identical_boxes_only():
    boxes = [[0, 0, .5, .5], [0, 0, .5, .5], [0, 0, .5, .49]]
    out = check(*inputs_from_boxes([[0.1, 0.9], [0.1, 0.8], [0.1, 0.7]], boxes), nms_threshold=1)
    np.testing.assert_array_equal(out[0, :, 0], [0, -1, 0])


def test_iou_exactly_at_threshold_suppresses():
    # IoU = 0.5 / 1.0 exactly in float32.
    boxes = [[0, 0, 1, 1], [0, 0, 0.5, 1], [0.5, 0, 1, 1]]
    out = check(*inputs_from_boxes([[0, 0.9], [0, 0.8], [0, 0.7]], boxes), nms_threshold=0.5)
    np.testing.assert_array_equal(out[0, :, 0], [0, -1, -1])
    out = check(*inputs_from_boxes([[0, 0.9], [0, 0.8], [0, 0.7]], boxes),
                nms_threshold=float(np.nextafter(np.float32(0.5), np.float32(1))))
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0])


def test_chain_suppression_suppressed_rows_do_not_suppress():
    # A suppresses B (IoU .6), B would suppress C (IoU .6) but A and C barely overlap.
    boxes = [[0, 0, 1, 1], [0.25, 0, 1.25, 1], [0.5, 0, 1.5, 1]]
    out = check(*inputs_from_boxes([[0, .9], [0, .8], [0, .7]], boxes), nms_threshold=0.5,
                clip=False)
    np.testing.assert_array_equal(out[0, :, 0], [0, -1, 0])


@pytest.mark.parametrize('force_suppress', [False, True])
def test_force_suppress_vs_per_class(force_suppress):
    boxes = [[0, 0, .5, .5], [0, 0, .5, .5], [0, 0, .5, .5]]
    out = check(*inputs_from_boxes([[0, .9, 0], [0, 0, .8], [0, .7, 0]], boxes),
                force_suppress=force_suppress)
    np.testing.assert_array_equal(out[0, :, 0], [0, -1, -1] if force_suppress else [0, 1, -1])


@pytest.mark.parametrize('nms_topk', [2, 0, -5, 5, 100])
def test_nms_topk_leftover_rows_quirk(nms_topk):
    # docs/ops-semantics.md §4.3 step 6 example: scores by anchor .6 .7 .4 .05 .5.
    probs = [[0, .6], [0, .7], [0, .4], [0, .05], [0, .5]]
    boxes = [[i / 5, 0, i / 5 + .1, .1] for i in range(5)]
    out = check(*inputs_from_boxes(probs, boxes), nms_topk=nms_topk)
    if nms_topk == 2:
        np.testing.assert_array_equal(out[0, :, 0], [0, 0, -1, -1, -1])
        np.testing.assert_array_equal(out[0, :, 1], np.float32([.7, .6, .4, .05, .5]))
    else:
        np.testing.assert_array_equal(out[0, :, 1], np.float32([.7, .6, .5, .4, .05]))


def test_boxes_clipped_to_the_same_corner_do_not_suppress():
    anchors = np.array([[[1.2, 1.2, 1.5, 1.5], [1.1, 1.3, 1.4, 1.6], [-.5, -.5, -.2, -.1]]],
                       'float32')
    probs = np.array([[[.1, .1, .1], [.9, .8, .7]]], 'float32')
    out = check(probs, np.zeros((1, 12), 'float32'), anchors)
    np.testing.assert_array_equal(out[0, :, 0], [0, 0, 0])


@pytest.mark.parametrize('clip', [True, False])
def test_nan_in_loc_pred(clip):
    loc = np.zeros((1, 12), 'float32')
    loc[0, 0] = np.nan
    loc[0, 6] = np.nan
    anchors = np.array([[[.1, .1, .4, .4], [.1, .1, .4, .4], [.2, .2, .3, .3]]], 'float32')
    out = check(np.array([[[.1, .1, .1], [.9, .8, .7]]], 'float32'), loc, anchors, clip=clip)
    assert np.isnan(out).any() != clip


def test_huge_boxes_without_clip():
    loc = np.full((1, 8), 100.0, 'float32')
    check(np.array([[[.1, .1], [.9, .8]]], 'float32'), loc,
          np.array([[[.1, .1, .4, .4], [.2, .2, .5, .5]]], 'float32'), clip=False)


@pytest.mark.parametrize('background_id', [0, 1, 2, -7])
def test_background_id_is_ignored(background_id):
    rng = np.random.RandomState(5)
    cls_prob, loc, anchors = random_case(rng, 2, 4, 50)
    expected = native(cls_prob, loc, anchors)
    assert_same(ours(cls_prob, loc, anchors, background_id=background_id), expected)


# --------------------------------------------------------------------------- random parity

def random_anchors(rng, n):
    """Anchors with many exact duplicates (identical boxes) and overlaps, some outside [0, 1]."""
    distinct = max(1, n // rng.choice([1, 2, 4]))
    centers = np.round(rng.uniform(-0.1, 1.1, (distinct, 2)) * 16) / 16
    sizes = np.round(rng.uniform(0.02, 0.6, (distinct, 2)) * 16) / 16
    if rng.rand() < 0.2:
        sizes[rng.rand(distinct) < 0.2] = 0  # zero-area anchors
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    return boxes[rng.randint(0, distinct, n)][None].astype('float32')


def random_case(rng, batch, classes, n):
    levels = rng.choice([3, 5, 8, 16])
    probs = rng.randint(0, levels + 1, (batch, classes, n)).astype('float32') / levels
    if rng.rand() < 0.3:  # real softmax outputs: few exact ties
        probs = mx.nd.softmax(mx.nd.array(rng.randn(batch, classes, n) * 2), axis=1).asnumpy()
    loc = np.round(rng.randn(batch, n * 4) * 4) / 8
    loc[:, rng.rand(n * 4) < 0.5] = 0  # zero offsets keep duplicate anchors identical
    return probs.astype('float32'), loc.astype('float32'), random_anchors(rng, n)


def random_params(rng):
    return dict(
        clip=bool(rng.rand() < 0.7),
        threshold=float(rng.choice([-0.5, -2.0, 0.0, 0.01, 0.125, 0.25, 0.5, 0.9, 1.5])),
        background_id=int(rng.choice([0, 0, 1, 3])),
        nms_threshold=float(rng.choice([0.0, -0.2, 0.1, 0.3, 0.45, 0.5, 0.5, 0.7, 1.0, 1.01,
                                        3.0])),
        force_suppress=bool(rng.rand() < 0.3),
        variances=tuple(float(v) for v in rng.choice([0.1, 0.2, 0.5, 1.0], 4))
        if rng.rand() < 0.3 else (0.1, 0.1, 0.2, 0.2),
        nms_topk=int(rng.choice([-1, -1, -5, 0, 1, 2, 3, 7, 20, 400, 5000])),
    )


SHAPES = [(1, 1, 1), (1, 2, 1), (2, 3, 2), (1, 2, 5), (3, 3, 17), (2, 5, 40), (4, 2, 33),
          (1, 21, 100), (5, 4, 120), (2, 3, 300), (8, 2, 64), (1, 6, 1000), (2, 21, 700),
          (1, 3, 3000), (12, 3, 20)]


@pytest.mark.parametrize('seed', range(320))
def test_random_parity(seed):
    rng = np.random.RandomState(seed)
    batch, classes, n = SHAPES[seed % len(SHAPES)]
    params = random_params(rng)
    cls_prob, loc, anchors = random_case(rng, batch, classes, n)
    expected = native(cls_prob, loc, anchors, **params)
    assert_same(ours(cls_prob, loc, anchors, **params), expected, f"seed {seed} {params}")


def test_random_suite_exercises_ties_and_suppression():
    """The suite is only meaningful if ties and suppressions actually happen."""
    suppressed = tied = 0
    for seed in range(0, 320, 7):
        rng = np.random.RandomState(seed)
        batch, classes, n = SHAPES[seed % len(SHAPES)]
        params = random_params(rng)
        out = native(*random_case(rng, batch, classes, n), **params)
        valid_scores = out[..., 1][out[..., 1] != -1]
        suppressed += int(((out[..., 0] == -1) & (out[..., 1] != -1)).sum())
        tied += valid_scores.size - np.unique(valid_scores).size
    assert suppressed > 100 and tied > 100


def test_large_ssd_like_case():
    rng = np.random.RandomState(11)
    n = 8732
    cls_prob = mx.nd.softmax(mx.nd.array(rng.randn(2, 21, n)), axis=1).asnumpy()
    anchors = random_anchors(rng, n)
    loc = (rng.randn(2, n * 4) * 0.5).astype('float32')
    for params in (dict(nms_threshold=0.45, nms_topk=400), dict(threshold=0.2),
                   dict(force_suppress=True, nms_topk=1000)):
        check(cls_prob, loc, anchors, **params)


@pytest.mark.parametrize('text', ['0.45', '0.5', '1', '0.3', '1e-30', '0.7071', '3e-7'])
def test_box_nms_threshold_text_is_exact(text):
    value = dmlc_float(text)
    below = np.nextafter(np.float32(value), np.float32(0))
    assert dmlc_float(below_threshold_text(value)) == float(below)


def test_box_nms_threshold_text_falls_back_for_denormals():
    assert below_threshold_text(dmlc_float('1e-45')) == '0'


# --------------------------------------------------------------------------- modes

def test_hybridized_equals_imperative_and_native():
    rng = np.random.RandomState(7)
    for params in (dict(), dict(nms_topk=5, force_suppress=True), dict(nms_threshold=0)):
        cls_prob, loc, anchors = random_case(rng, 3, 4, 60)
        expected = native(cls_prob, loc, anchors, **params)
        assert_same(ours(cls_prob, loc, anchors, **params), expected)
        assert_same(ours(cls_prob, loc, anchors, hybridize=True, **params), expected)


def test_hybridized_block_handles_new_shapes():
    block = MultiBoxDetection(nms_topk=10)
    block.hybridize(static_alloc=True)
    rng = np.random.RandomState(8)
    for batch, classes, n in ((2, 3, 30), (1, 5, 7), (4, 2, 100)):
        cls_prob, loc, anchors = random_case(rng, batch, classes, n)
        out = block(*[mx.nd.array(x) for x in (cls_prob, loc, anchors)]).asnumpy()
        assert_same(out, native(cls_prob, loc, anchors, nms_topk=10))


def test_export_runs_in_plain_mxnet(tmp_path):
    rng = np.random.RandomState(9)
    cls_prob, loc, anchors = random_case(rng, 2, 4, 50)
    params = dict(nms_threshold=0.45, nms_topk=20)
    block = MultiBoxDetection(**params)
    block.hybridize(static_alloc=True)
    block(*[mx.nd.array(x) for x in (cls_prob, loc, anchors)])
    prefix = str(tmp_path / 'detection')
    block.export(prefix)
    graph = json.load(open(prefix + '-symbol.json'))
    assert not any(node['op'].startswith('_contrib_MultiBox') or node['op'] == 'Custom'
                   for node in graph['nodes'])
    symbol = mx.sym.load(prefix + '-symbol.json')
    inputs = dict(zip(symbol.list_arguments(),
                      [mx.nd.array(x) for x in (cls_prob, loc, anchors)]))
    out = symbol.bind(mx.cpu(), inputs).forward()[0].asnumpy()
    assert_same(out, native(cls_prob, loc, anchors, **params))


def test_symbol_inputs():
    block = MultiBoxDetection()
    out = block(mx.sym.var('cls_prob'), mx.sym.var('loc_pred'), mx.sym.var('anchor'))
    _, out_shapes, _ = out.infer_shape(cls_prob=(2, 3, 10), loc_pred=(2, 40), anchor=(1, 10, 4))
    assert out_shapes == [(2, 10, 6)]


def test_no_gradient_reaches_the_inputs():
    rng = np.random.RandomState(10)
    arrays = [mx.nd.array(x) for x in random_case(rng, 2, 3, 20)]
    for array in arrays:
        array.attach_grad()
    with mx.autograd.record():
        out = MultiBoxDetection()(*arrays)
        loss = (out * out).sum()
    loss.backward()
    for array in arrays:
        assert (array.grad.asnumpy() == 0).all()


# --------------------------------------------------------------------------- errors

@pytest.mark.parametrize('params, match', [
    (dict(variances=(0.1, 0.1, 0.2)), 'variances'),
    (dict(variances='(0.1,0.2,0.2,0.2,0.3)'), 'variances'),
    (dict(variances='abc'), 'variances'),
    (dict(threshold='x'), 'threshold'),
    (dict(nms_threshold='half'), 'nms_threshold'),
    (dict(nms_topk=1.5), 'nms_topk'),
    (dict(clip='maybe'), 'clip'),
    (dict(force_suppress=2), 'force_suppress'),
])
def test_invalid_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MultiBoxDetection(**params)


def test_parameters_as_strings():
    rng = np.random.RandomState(12)
    cls_prob, loc, anchors = random_case(rng, 2, 3, 30)
    expected = native(cls_prob, loc, anchors, clip=False, variances=(0.1, 0.2, 0.3, 0.4),
                      nms_topk=4, threshold=0.1, force_suppress=True)
    actual = ours(cls_prob, loc, anchors, clip='False', variances='(0.1, 0.2, 0.3, 0.4)',
                  nms_topk='4', threshold='0.1', force_suppress='1')
    assert_same(actual, expected)


@pytest.mark.parametrize('shapes, match', [
    (((2, 3, 10), (2, 40), (1, 10, 4, 1)), 'anchor'),
    (((2, 3, 10), (2, 40), (2, 10, 4)), 'anchor'),
    (((2, 3, 10), (2, 40), (1, 10, 3)), 'anchor'),
    (((2, 3, 10), (2, 44), (1, 10, 4)), 'loc_pred'),
    (((2, 3, 10), (2, 10, 4), (1, 10, 4)), 'loc_pred'),
    (((2, 3, 11), (2, 40), (1, 10, 4)), 'cls_prob'),
    (((2, 30), (2, 40), (1, 10, 4)), 'cls_prob'),
])
def test_invalid_shapes(shapes, match):
    arrays = [mx.nd.zeros(shape) for shape in shapes]
    with pytest.raises(ValueError, match=match):
        MultiBoxDetection()(*arrays)


@pytest.mark.parametrize('position', [0, 1, 2])
@pytest.mark.parametrize('dtype', ['float16', 'float64', 'int32'])
def test_only_float32_like_native(position, dtype):
    arrays = [mx.nd.zeros(shape) for shape in ((2, 3, 10), (2, 40), (1, 10, 4))]
    name = ('cls_prob', 'loc_pred', 'anchor')[position]
    arrays[position] = arrays[position].astype(dtype)
    with pytest.raises(TypeError, match=name):
        MultiBoxDetection()(*arrays)


def test_symbol_api_infers_shape_and_binds_in_module():
    import multibox.symbol
    shapes = dict(det_cls_prob=(2, 4, 30), det_loc_pred=(2, 120), det_anchor=(1, 30, 4))
    out = multibox.symbol.MultiBoxDetection(nms_threshold=0.45, nms_topk=20, name='det')
    _, out_shapes, _ = out.infer_shape(**shapes)
    assert out_shapes == [(2, 30, 6)]
    # The anchors are a fixed parameter of the module (its shape declared on the variable,
    # as MultiBoxPrior's output would be known), the other inputs are data.
    out = multibox.symbol.MultiBoxDetection(
        mx.sym.var('det_cls_prob'), mx.sym.var('det_loc_pred'),
        mx.sym.var('det_anchor', shape=shapes['det_anchor']), nms_threshold=0.45, nms_topk=20,
        name='det')
    data_names = ['det_cls_prob', 'det_loc_pred']
    module = mx.mod.Module(out, data_names=data_names, label_names=None)
    module.bind(data_shapes=[(n, shapes[n]) for n in data_names], for_training=False)
    rng = np.random.RandomState(13)
    cls_prob, loc, anchors = random_case(rng, 2, 4, 30)
    module.init_params(arg_params={'det_anchor': mx.nd.array(anchors)}, allow_missing=False)
    module.forward(mx.io.DataBatch([mx.nd.array(cls_prob), mx.nd.array(loc)]), is_train=False)
    assert_same(module.get_outputs()[0].asnumpy(),
                native(cls_prob, loc, anchors, nms_threshold=0.45, nms_topk=20))
