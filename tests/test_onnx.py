"""ONNX export (``ssd.export.onnx``) run by onnxruntime against MXNet on the same inputs.

* MultiBoxPrior / MultiBoxDetection graphs alone: bit-exact, on inputs full of score ties,
  duplicate boxes and suppressions (the converters reproduce MXNet's operators exactly), with
  either NMS conversion (ONNX NonMaxSuppression, or the exact Loop);
* a whole SSD (mobilenet0.25, backbone to NMS) exported with ``export_onnx``: the same
  detection rows within 1e-5 (see ``E2E_ATOL``), and a model that passes the ONNX checker;
* errors name the operator that cannot be converted; mx2onnx's converter table is restored.
"""
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import multibox.symbol as mbs
from ssd.export.onnx import NMS_MODES, OnnxExportError, export_onnx, to_onnx_model
from symbols.ssd import get_symbol

pytestmark = pytest.mark.e2e

NUM_CLASSES = 4
DATA_SHAPE = 128
BATCH = 2
NMS_TOPK = 400
# Whole-network tolerance. The backbone's float32 convolutions and the softmax are summed in
# a different order by MXNet (oneDNN) and onnxruntime (MLAS), which also has its own exp:
# scores and boxes differ by at most 1.3e-6 in our runs (12 image batches). 1e-5 leaves a
# margin and is still far below any visible change of a score in [0, 1] or a normalised box.
E2E_ATOL = 1e-5
MEAN_PIXEL = np.array([123.675, 116.28, 103.53], 'float32').reshape(1, 3, 1, 1)


def run_onnx(model, inputs):
    """Outputs of an ``onnx.ModelProto`` (or file path) run by onnxruntime on CPU."""
    source = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(source, providers=['CPUExecutionProvider'])
    return session.run(None, inputs)


def run_mxnet(symbol, inputs):
    """Output 0 of ``symbol`` bound to numpy ``inputs``."""
    executor = symbol.bind(mx.cpu(), {k: mx.nd.array(v) for k, v in inputs.items()})
    return executor.forward()[0].asnumpy()


# ------------------------------------------------------------------ operators, bit-exact

def tied_detection_inputs(rng, batch, classes, n):
    """cls_prob (B, C, N) on a coarse grid (many equal scores), loc_pred (B, 4N) multiples of
    1/8 (half of them 0), anchors (1, N, 4) drawn from n/2 boxes (duplicates)."""
    probs = rng.randint(0, 9, (batch, classes, n)).astype('float32') / 8
    centers = np.round(rng.uniform(0, 1, (n // 2, 2)) * 16) / 16
    sizes = np.round(rng.uniform(0.05, 0.5, (n // 2, 2)) * 16) / 16
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1)
    loc = np.round(rng.randn(batch, n * 4) * 4) / 8
    loc[:, rng.rand(n * 4) < 0.5] = 0
    anchors = boxes[rng.randint(0, n // 2, n)][None]
    return {'cls_prob': probs, 'loc_pred': loc.astype('float32'),
            'anchor': anchors.astype('float32')}


DETECTION_CASES = [
    dict(),
    dict(nms_topk=20),
    dict(nms_topk=400),  # more than the anchors: topk pads its keys
    dict(force_suppress=True, nms_threshold=0.3),
    dict(nms_topk=7, threshold=0.3, clip=False),
    dict(nms_threshold=0),  # no sort, no NMS: compaction only
    dict(nms_threshold=1.0),  # only identical boxes suppress
]


@pytest.mark.parametrize('nms', NMS_MODES)
@pytest.mark.parametrize('seed, params', enumerate(DETECTION_CASES), ids=repr)
def test_detection_graph_is_bit_exact(seed, params, nms):
    inputs = tied_detection_inputs(np.random.RandomState(seed), 2, 4, 60)
    symbol = mbs.MultiBoxDetection(*(mx.sym.var(name) for name in inputs), **params)
    model = to_onnx_model(symbol, {}, {k: v.shape for k, v in inputs.items()}, nms=nms)
    expected = run_mxnet(symbol, inputs)
    [actual] = run_onnx(model, inputs)
    assert np.array_equal(actual, expected, equal_nan=True)
    # the case exercises what it should: suppressed rows and tied scores
    if params.get('nms_threshold', 0.5) not in (0, 1.0):
        assert ((expected[..., 0] == -1) & (expected[..., 1] >= 0)).any()
    scores = expected[..., 1][expected[..., 1] >= 0]
    assert scores.size > np.unique(scores).size


def tied_nms_rows(rng, shape, center):
    """box_nms input (..., N, 6) rows [id in -1..2, score on a 1/8 grid, 4 box values drawn
    from N/2 boxes, corner or center format]."""
    n = shape[-2]
    low = np.round(rng.uniform(0, 1, (n // 2, 2)) * 16) / 16
    size = np.round(rng.uniform(0.05, 0.5, (n // 2, 2)) * 16) / 16
    boxes = np.concatenate([low + size / 2, size] if center else [low, low + size], axis=1)
    ids = rng.randint(-1, 3, shape[:-1] + (1,))
    scores = rng.randint(-1, 9, shape[:-1] + (1,)) / 8
    rows = np.concatenate([ids, scores, boxes[rng.randint(0, n // 2, shape[:-1])]], axis=-1)
    return rows.astype('float32')


NMS_CASES = [
    (dict(id_index=0), (2, 50, 6)),
    (dict(id_index=0, background_id=0, valid_thresh=0.25, topk=10, overlap_thresh=0.3), (3, 40, 6)),
    (dict(id_index=0, force_suppress=True, topk=400), (2, 50, 6)),
    (dict(in_format='center', out_format='center', overlap_thresh=0.2), (30, 6)),
    (dict(id_index=0, topk=0), (1, 20, 6)),
]


@pytest.mark.parametrize('nms', NMS_MODES)
@pytest.mark.parametrize('seed, case', enumerate(NMS_CASES), ids=repr)
def test_box_nms_is_bit_exact(seed, case, nms):
    params, shape = case
    inputs = {'data': tied_nms_rows(np.random.RandomState(seed), shape,
                                    params.get('in_format') == 'center')}
    symbol = mx.sym.contrib.box_nms(mx.sym.var('data'), **params)
    [actual] = run_onnx(to_onnx_model(symbol, {}, {'data': shape}, nms=nms), inputs)
    expected = run_mxnet(symbol, inputs)
    assert np.array_equal(actual, expected)
    if params.get('topk') != 0:  # something was filtered or suppressed
        assert (expected != -1).any(axis=-1).sum() < (inputs['data'][..., 1] > 0).sum()


@pytest.mark.parametrize('nms, present, absent', [('standard', 'NonMaxSuppression', 'Loop'),
                                                  ('exact', 'Loop', 'NonMaxSuppression')])
def test_nms_mode_chooses_the_onnx_operator(nms, present, absent):
    symbol = mx.sym.contrib.box_nms(mx.sym.var('data'), id_index=0)
    operators = {n.op_type for n in to_onnx_model(symbol, {}, {'data': (1, 5, 6)}, nms=nms).graph.node}
    assert present in operators and absent not in operators


def test_prior_graph_is_bit_exact():
    symbol = mbs.MultiBoxPrior(mx.sym.var('data'), sizes=(0.3, 0.6), ratios=(1, 2, 0.5),
                               steps=(0.1, 0.125), clip=True)
    inputs = {'data': np.zeros((1, 8, 5, 7), 'float32')}
    [actual] = run_onnx(to_onnx_model(symbol, {}, {'data': (1, 8, 5, 7)}), inputs)
    assert np.array_equal(actual, run_mxnet(symbol, inputs))


# ------------------------------------------------------------------ whole SSD

def seeded_params(symbol, data_shape, seed=0):
    """Deterministic (arg_params, aux_params) from a numpy RNG, predictors calibrated.

    Convolutions are He-normal (MXNet's Xavier makes this body's activations vanish, so every
    score would be equal), batch norms identities, biases zero. Each predictor is then
    scaled so that its outputs have unit spread on seeded images: class logits and box
    offsets of order 1 whatever the body does to the feature scale (without it, scores
    saturate at 0 and 1 and boxes at the image corners: ties everywhere).
    """
    rng = np.random.RandomState(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=data_shape)
    arg_params = {}
    for name, shape in zip(symbol.list_arguments()[1:], arg_shapes[1:]):  # 0 is data
        if len(shape) == 4:
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        else:
            value = np.ones(shape) if name.endswith(('gamma', 'scale')) else np.zeros(shape)
        arg_params[name] = mx.nd.array(value)
    aux_params = {name: mx.nd.ones(shape) if name.endswith('var') else mx.nd.zeros(shape)
                  for name, shape in zip(symbol.list_auxiliary_states(), aux_shapes)}
    internals = symbol.get_internals()
    heads = [n for n in internals.list_outputs() if n.endswith('_pred_conv_output')]
    executor = mx.sym.Group([internals[n] for n in heads]).bind(
        mx.cpu(), {**arg_params, 'data': mx.nd.array(random_images(seed, data_shape))},
        aux_states=aux_params)
    for head, output in zip(heads, executor.forward()):  # biases are 0: outputs scale linearly
        weight = head[:-len('_output')] + '_weight'
        arg_params[weight] = arg_params[weight] / max(float(output.asnumpy().std()), 1e-6)
    return arg_params, aux_params


def random_images(seed, shape):
    """Mean-subtracted RGB images of uniformly random pixels, (B, 3, H, W) float32."""
    pixels = np.random.RandomState(seed).uniform(0, 255, shape)
    return (pixels - MEAN_PIXEL).astype('float32')


def module_detections(symbol, arg_params, aux_params, images):
    module = mx.mod.Module(symbol, data_names=['data'], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[('data', images.shape)], for_training=False)
    module.set_params(arg_params, aux_params)
    module.forward(mx.io.DataBatch([mx.nd.array(images)]), is_train=False)
    return module.get_outputs()[0].asnumpy()


def assert_same_rows(actual, expected, atol):
    """Row ``r`` of every image equals MXNet's row ``r`` (class id exactly, the other columns
    within ``atol``); a row may only sit at another position among rows whose scores are
    within ``atol`` of its own (float rounding can reorder such near-ties)."""
    assert actual.shape == expected.shape
    for image, (ours, theirs) in enumerate(zip(actual, expected)):
        for r, row in enumerate(ours):
            if row[0] == theirs[r, 0] and np.allclose(row, theirs[r], rtol=0, atol=atol):
                continue
            near = np.flatnonzero(np.abs(theirs[:, 1] - row[1]) <= atol)
            assert any(row[0] == theirs[j, 0] and np.allclose(row, theirs[j], rtol=0, atol=atol)
                       for j in near), f"image {image} row {r}: {row} vs MXNet {theirs[r]}"


@pytest.fixture(scope='module')
def exported_ssd(tmp_path_factory):
    """(symbol, arg_params, aux_params, onnx file) of a seeded mobilenet0.25 SSD."""
    symbol = get_symbol('mobilenet0.25', NUM_CLASSES, DATA_SHAPE, nms_topk=NMS_TOPK)
    shape = (BATCH, 3, DATA_SHAPE, DATA_SHAPE)
    arg_params, aux_params = seeded_params(symbol, shape)
    path = str(tmp_path_factory.mktemp('onnx') / 'ssd.onnx')
    assert export_onnx(symbol, arg_params, aux_params, DATA_SHAPE, BATCH, path) == path
    return symbol, arg_params, aux_params, path


@pytest.mark.parametrize('seed', [10, 11])  # seed 0 calibrated the parameters
def test_ssd_detections_match_mxnet(exported_ssd, seed):
    symbol, arg_params, aux_params, path = exported_ssd
    images = random_images(seed, (BATCH, 3, DATA_SHAPE, DATA_SHAPE))
    expected = module_detections(symbol, arg_params, aux_params, images)
    [actual] = run_onnx(path, {'data': images})
    assert_same_rows(actual, expected, E2E_ATOL)
    top = expected[:, :NMS_TOPK]  # rows that took part in NMS (get_symbol's nms_topk)
    suppressed = (top[..., 0] == -1) & (top[..., 1] >= 0)
    assert (top[..., 0] >= 0).sum(axis=1).min() > 50 and suppressed.any()  # NMS had work


def test_exported_ssd_passes_the_onnx_checker(exported_ssd):
    path = exported_ssd[3]
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ['data']
    assert [o.name for o in model.graph.output] == ['detections']
    assert not [f for f in os.listdir(os.path.dirname(path)) if f != 'ssd.onnx']  # no temp


# ------------------------------------------------------------------ errors

def test_unconvertible_operator_is_named():
    native = mx.sym.contrib.MultiBoxPrior(mx.sym.var('data'), sizes=(0.5,))
    with pytest.raises(OnnxExportError, match='_contrib_MultiBoxPrior'):
        to_onnx_model(native, {}, {'data': (1, 1, 4, 4)})


def test_failing_converter_names_operator_and_node():
    nms = mx.sym.contrib.box_nms(mx.sym.var('data'), in_format='center', out_format='corner',
                                 name='my_nms')
    with pytest.raises(OnnxExportError, match="'_contrib_box_nms'.*my_nms"):
        to_onnx_model(nms, {}, {'data': (1, 5, 6)})


def test_converter_table_is_restored():
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    before = MXNetGraph.registry_
    snapshot = {version: dict(table) for version, table in before.items()}
    symbol = mbs.MultiBoxPrior(mx.sym.var('data'), sizes=(0.5,))
    to_onnx_model(symbol, {}, {'data': (1, 1, 4, 4)})
    assert MXNetGraph.registry_ is before and before == snapshot


def test_missing_parameter_and_bad_opset():
    symbol = get_symbol('mobilenet0.25', NUM_CLASSES, DATA_SHAPE)
    with pytest.raises(ValueError, match='no value for'):
        export_onnx(symbol, {}, {}, DATA_SHAPE, 1, '/nonexistent/never.onnx')
    with pytest.raises(ValueError, match="nms must be one of standard, exact, got 'fast'"):
        to_onnx_model(mbs.MultiBoxPrior(mx.sym.var('data')), {}, {'data': (1, 1, 2, 2)},
                      nms='fast')
    with pytest.raises(ValueError, match='opset'):
        to_onnx_model(mbs.MultiBoxPrior(mx.sym.var('data')), {}, {'data': (1, 1, 2, 2)},
                      opset=11)
