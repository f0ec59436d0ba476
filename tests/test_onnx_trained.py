"""ONNX export of TRAINED weights, run by onnxruntime and OpenVINO against MXNet on real images.

Seeded weights (``tests/test_onnx.py``) keep every BatchNorm gamma at 1 and the statistics at
0/1, so they cannot show a converter that misreads BatchNorm. Here: the shipped model, and a
checkpoint trained a few iterations by ``train.py`` with a strong weight decay, so that the
stored gammas of the ``fix_gamma`` BatchNorms (which MXNet ignores) are far from 1 and the
moving statistics far from 0/1. Both runtimes must give MXNet's valid detections (class id
>= 0): the same rows, scores and boxes within ``ATOL``.
"""
import glob
import json
import os

import mxnet as mx
import numpy as np
import onnx
import onnxruntime
import openvino
import pytest

import train
from ssd.data import synthetic
from ssd.data.dataset import preprocess
from ssd.export.onnx import export_onnx
from ssd.inference import models
from ssd.options import SHIPPED_EPOCH, SHIPPED_PREFIX
from test_onnx import assert_same_rows, module_detections

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = sorted(glob.glob(os.path.join(ROOT, 'examples', 'images', '*.jpg')))
ATOL = 1e-4  # the tolerance on scores and normalised box corners


def run_openvino(path, images):
    """Output 0 of the ONNX file ``path`` compiled by OpenVINO for the CPU in float32."""
    compiled = openvino.Core().compile_model(path, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    return compiled({'data': images})[0]


def run_onnxruntime(path, images):
    """Output 0 of the ONNX file ``path`` run by onnxruntime, memory patterns off: with a
    symbolic batch axis, onnxruntime 1.18.1's memory-pattern planner breaks the second run
    (an Expand or Range reads an overwritten shape), see README."""
    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return session.run(None, {'data': images})[0]


RUNTIMES = {'onnxruntime': run_onnxruntime, 'openvino': run_openvino}


def real_images(data_shape):
    """examples/images/*.jpg preprocessed as demo.py does, (4, 3, S, S) float32."""
    return np.stack([preprocess(mx.image.imread(p), data_shape).asnumpy() for p in IMAGES])


def fix_gamma_nodes(symbol):
    """Names of the gamma inputs of the BatchNorm nodes with fix_gamma true (MXNet's default)."""
    nodes = json.loads(symbol.tojson())['nodes']
    return [nodes[node['inputs'][1][0]]['name'] for node in nodes if node['op'] == 'BatchNorm'
            and node.get('attrs', {}).get('fix_gamma', 'True').lower() in ('true', '1')]


def valid_rows(detections):
    """Per image, the rows MXNet keeps (class id >= 0), in order."""
    return [image[image[:, 0] >= 0] for image in detections]


def assert_same_detections(actual, expected):
    for ours, theirs in zip(valid_rows(actual), valid_rows(expected)):
        assert len(ours) == len(theirs)
        assert_same_rows(ours[None], theirs[None], ATOL)


def exported(model, path, batch):
    return export_onnx(model.symbol, model.arg_params, model.aux_params, model.data_shape, batch,
                       str(path))


@pytest.fixture(scope='module')
def shipped(tmp_path_factory):
    """The shipped model exported with a symbolic batch axis (deploy.py's default)."""
    model = models.from_checkpoint(SHIPPED_PREFIX, SHIPPED_EPOCH)
    path = exported(model, tmp_path_factory.mktemp('shipped') / 'ssd.onnx', None)
    return model, path


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A mobilenet0.25 checkpoint after 2 epochs of 3 iterations, SGD, weight decay 20."""
    root = tmp_path_factory.mktemp('trained')
    synthetic.ensure_dataset(str(root / 'data'), num_train=12, num_test=4, seed=3)
    prefix = str(root / 'ssd')
    assert train.main(['--data-root', str(root / 'data'), '--prefix', prefix, '--network',
                       'mobilenet0.25', '--data-shape', '128', '--batch-size', '4',
                       '--num-workers', '0', '--frequent', '0', '--end-epoch', '2',
                       '--val-interval', '100', '--optimizer', 'sgd', '--lr', '0.01',
                       '--wd', '20', '--warmup-epochs', '0']) == 0
    model = models.from_checkpoint(prefix, 2)
    return model, exported(model, root / 'ssd.onnx', len(IMAGES))


def test_shipped_model_has_stored_gammas_mxnet_ignores(shipped):
    model, _ = shipped
    gammas = fix_gamma_nodes(model.symbol)
    assert len(gammas) == 8  # the MobileNet extra layers
    assert max(abs(model.arg_params[name].asnumpy()).max() for name in gammas) < 0.1


def test_trained_checkpoint_is_far_from_initial_values(trained):
    model, _ = trained
    gammas = [model.arg_params[name].asnumpy() for name in fix_gamma_nodes(model.symbol)]
    assert gammas and max(abs(g - 1).min() for g in gammas) > 0.5
    means = [v.asnumpy() for k, v in model.aux_params.items() if k.endswith('_mean')]
    variances = [v.asnumpy() for k, v in model.aux_params.items() if k.endswith('_var')]
    assert max(abs(m).max() for m in means) > 0.5
    assert max(abs(v - 1).max() for v in variances) > 0.5


@pytest.mark.parametrize('runtime', sorted(RUNTIMES))
@pytest.mark.parametrize('which', ['shipped', 'trained'])
def test_runtime_gives_mxnet_detections_on_real_images(request, which, runtime):
    model, path = request.getfixturevalue(which)
    images = real_images(model.data_shape)
    expected = module_detections(model.symbol, model.arg_params, model.aux_params, images)
    assert (expected[..., 0] >= 0).sum(axis=1).min() > 0  # every image has detections
    assert_same_detections(RUNTIMES[runtime](path, images), expected)


@pytest.mark.parametrize('runtime', sorted(RUNTIMES))
def test_symbolic_batch_axis_takes_any_batch_size(shipped, runtime):
    model, path = shipped
    graph = onnx.load(path).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
    _, [(_, rows, columns)], _ = model.symbol.infer_shape(data=(1, 3, 256, 256))
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == \
        ['batch', rows, columns]
    images = real_images(model.data_shape)
    for batch in (1, 3):
        expected = module_detections(model.symbol, model.arg_params, model.aux_params,
                                     images[:batch])
        assert_same_detections(RUNTIMES[runtime](path, images[:batch]), expected)


def test_symbolic_batch_runs_repeatedly_in_onnxruntime_without_memory_patterns(shipped):
    options = onnxruntime.SessionOptions()
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(shipped[1], options,
                                           providers=['CPUExecutionProvider'])
    images = real_images(shipped[0].data_shape)
    first, second = (session.run(None, {'data': images})[0] for _ in range(2))
    assert np.array_equal(first, second)


def test_fixed_batch_size_is_declared(trained):
    dims = onnx.load(trained[1]).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [len(IMAGES), 3, 128, 128]


@pytest.mark.parametrize('opset, nms', [(15, 'standard'), (17, 'exact')])
def test_other_opsets_and_the_exact_nms_give_mxnet_detections(tmp_path, opset, nms):
    model = models.from_checkpoint(SHIPPED_PREFIX, SHIPPED_EPOCH)
    path = export_onnx(model.symbol, model.arg_params, model.aux_params, model.data_shape, None,
                       str(tmp_path / 'ssd.onnx'), opset=opset, nms=nms)
    assert onnx.load(path).opset_import[0].version == opset
    images = real_images(model.data_shape)
    expected = module_detections(model.symbol, model.arg_params, model.aux_params, images)
    for run in RUNTIMES.values():
        assert_same_detections(run(path, images), expected)
