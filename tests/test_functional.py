"""multibox.symbol / multibox.ndarray are drop-ins for mx.contrib.symbol / mx.contrib.ndarray.

The builder below is written the way mxnet-ssd's symbol/common.py and symbol_builder.py use the
contrib ops (string tuple parameters, positional ``*[...]`` calls, ``name=``); running it with
``ops=mx.contrib.symbol`` and with ``ops=multibox.symbol`` must give the same outputs.
"""
import inspect
import types

import mxnet as mx
import numpy as np
import pytest

import multibox
import symbols
from conftest import assert_same
from symbols import presets
from symbols.ssd import inference_graph, training_graph

pytestmark = pytest.mark.parity


def ssd_like_graph(ops, num_classes=3, named=True):
    """mxnet-ssd's training graph on two tiny feature maps; ``named=False`` leaves every MultiBox
    op its default name."""
    name = (lambda text: {'name': text}) if named else (lambda text: {})
    data, label = mx.sym.var('data'), mx.sym.var('label')
    body = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1), name='conv1')
    layers = [body, mx.sym.Pooling(body, kernel=(2, 2), stride=(2, 2), pool_type='max', name='pool1')]
    sizes, ratios = ['(0.2,0.272)', '(0.37,0.447)'], ['[1,2,0.5]', '[1,2,0.5,3,0.333]']
    anchors, cls_preds, loc_preds = [], [], []
    for i, layer in enumerate(layers):
        num_anchors = len(eval(sizes[i])) + len(eval(ratios[i])) - 1
        loc = mx.sym.Convolution(layer, num_filter=4 * num_anchors, kernel=(3, 3), pad=(1, 1), name=f'loc{i}')
        cls = mx.sym.Convolution(layer, num_filter=(num_classes + 1) * num_anchors, kernel=(3, 3), pad=(1, 1),
                                 name=f'cls{i}')
        loc_preds.append(mx.sym.Flatten(mx.sym.transpose(loc, axes=(0, 2, 3, 1))))
        cls_preds.append(mx.sym.Flatten(mx.sym.transpose(cls, axes=(0, 2, 3, 1))))
        prior = ops.MultiBoxPrior(layer, sizes=sizes[i], ratios=ratios[i], clip=False,
                                  steps='(-1,-1)', **name(f'layer{i}_anchors'))
        anchors.append(mx.sym.Flatten(prior))
    loc_preds = mx.sym.concat(*loc_preds, dim=1)
    cls_preds = mx.sym.transpose(mx.sym.reshape(mx.sym.concat(*cls_preds, dim=1), (0, -1, num_classes + 1)),
                                 axes=(0, 2, 1))
    anchors = mx.sym.reshape(mx.sym.concat(*anchors, dim=1), (0, -1, 4))
    target = ops.MultiBoxTarget(*[anchors, label, cls_preds], overlap_threshold=.5, ignore_label=-1,
                                negative_mining_ratio=3, minimum_negative_samples=0,
                                negative_mining_thresh=.5, variances=(0.1, 0.1, 0.2, 0.2),
                                **name('multibox_target'))
    cls_prob = mx.sym.softmax(cls_preds, axis=1)
    detection = ops.MultiBoxDetection(*[cls_prob, loc_preds, anchors], **name('detection'),
                                      nms_threshold=0.45, force_suppress=False,
                                      variances=(0.1, 0.1, 0.2, 0.2), nms_topk=400)
    return mx.sym.Group([target[0], target[1], target[2], detection, anchors])


def test_mxnet_ssd_builder_migrates_by_swapping_the_module():
    rng = np.random.RandomState(3)
    native, ours = ssd_like_graph(mx.contrib.symbol), ssd_like_graph(multibox.symbol)
    assert '_contrib_MultiBox' not in ours.tojson()
    assert native.list_arguments() == ours.list_arguments()
    shapes = {'data': (2, 3, 16, 16), 'label': (2, 3, 5)}
    arg_shapes, _, _ = native.infer_shape(**shapes)
    args = {name: mx.nd.array(rng.normal(scale=0.3, size=shape))
            for name, shape in zip(native.list_arguments(), arg_shapes)}
    label = np.array([[[0, .1, .1, .5, .6], [2, .4, .3, .9, .8], [-1, -1, -1, -1, -1]],
                      [[1, .2, .5, .7, .95], [-1] * 5, [-1] * 5]], dtype='float32')
    args['label'] = mx.nd.array(label)
    expected = native.eval(ctx=mx.cpu(), **args)
    got = ours.eval(ctx=mx.cpu(), **args)
    for ours_out, native_out in zip(got, expected):
        assert_same(ours_out.asnumpy(), native_out.asnumpy(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('name', ['MultiBoxPrior', 'MultiBoxTarget', 'MultiBoxDetection'])
def test_signatures_match_the_contrib_functions(name):
    ours = inspect.signature(getattr(multibox.symbol, name)).parameters
    native_doc = getattr(mx.contrib.symbol, name).__doc__
    for parameter in ours:
        if parameter != 'name':
            assert f'{parameter} :' in native_doc, f'{parameter} is not a parameter of the native {name}'
    native_parameters = [line.split(' :')[0].strip() for line in native_doc.split('Parameters')[1].split('\n')
                         if ' : ' in line and not line.startswith(' ' * 8)]
    assert [p for p in native_parameters if p not in ('name', 'attr', 'out')] == \
        [p for p in ours if p != 'name']


def test_ndarray_functions_return_arrays_like_contrib():
    rng = np.random.RandomState(5)
    data = mx.nd.zeros((1, 1, 4, 4))
    anchors = multibox.ndarray.MultiBoxPrior(data, sizes='(0.3,0.5)', ratios='(1,2)')
    assert_same(anchors.asnumpy(), mx.nd.contrib.MultiBoxPrior(data, sizes=(0.3, 0.5), ratios=(1, 2)).asnumpy())
    label = mx.nd.array([[[1, .1, .1, .4, .4], [-1, -1, -1, -1, -1]]])
    cls_pred = mx.nd.array(rng.normal(size=(1, 3, anchors.shape[1])))
    ours = multibox.ndarray.MultiBoxTarget(anchors, label, cls_pred, negative_mining_ratio=3)
    native = mx.nd.contrib.MultiBoxTarget(anchors, label, cls_pred, negative_mining_ratio=3)
    assert isinstance(ours, list) and len(ours) == 3
    for o, n in zip(ours, native):
        assert_same(o.asnumpy(), n.asnumpy())
    cls_prob = mx.nd.softmax(cls_pred, axis=1)
    loc_pred = mx.nd.array(rng.normal(size=(1, anchors.shape[1] * 4)))
    out = mx.nd.zeros((1, anchors.shape[1], 6))
    multibox.ndarray.MultiBoxDetection(cls_prob, loc_pred, anchors, nms_threshold=0.3, out=out)
    assert_same(out.asnumpy(), mx.nd.contrib.MultiBoxDetection(cls_prob, loc_pred, anchors,
                                                              nms_threshold=0.3).asnumpy())


def test_symbol_inputs_default_to_named_variables():
    prior = multibox.symbol.MultiBoxPrior(sizes=(0.5,), name='p')
    assert prior.list_arguments() == ['p_data']
    target = multibox.symbol.MultiBoxTarget(name='t')
    assert target.list_arguments() == ['t_anchor', 't_label', 't_cls_pred']
    assert len(target.list_outputs()) == 3


def test_wrong_flavour_of_input_is_named():
    with pytest.raises(TypeError, match='data must be a Symbol, got NDArray'):
        multibox.symbol.MultiBoxPrior(mx.nd.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match='anchor must be an NDArray, got Symbol'):
        multibox.ndarray.MultiBoxTarget(mx.sym.var('a'), mx.nd.zeros((1, 1, 5)), mx.nd.zeros((1, 2, 1)))


def _built_both_ways(build):
    """``build(ops)`` with the native ops and with ours, each under a fresh NameManager (so
    default names count from 0 in both)."""
    graphs = []
    for ops in (mx.contrib.symbol, multibox.symbol):
        with mx.name.NameManager():
            graphs.append(build(ops))
    return graphs


def _assert_native_names(native, ours):
    assert ours.list_outputs() == native.list_outputs()
    our_internals = ours.get_internals().list_outputs()
    missing = [n for n in native.get_internals().list_outputs() if n not in our_internals]
    assert not missing, f"internal outputs missing: {missing}"


@pytest.mark.parametrize('named, op_outputs', [
    (True, ['layer0_anchors_output', 'layer1_anchors_output', 'multibox_target_loc_target',
            'multibox_target_loc_mask', 'multibox_target_cls_target', 'detection_output']),
    (False, ['multiboxprior0_output', 'multiboxprior1_output', 'multiboxtarget0_loc_target',
             'multiboxtarget0_loc_mask', 'multiboxtarget0_cls_target', 'multiboxdetection0_output'])])
def test_outputs_and_internals_have_the_native_names(named, op_outputs):
    native, ours = _built_both_ways(lambda ops: ssd_like_graph(ops, named=named))
    _assert_native_names(native, ours)
    assert set(op_outputs) <= set(native.get_internals().list_outputs())
    # looked up by name, every op output holds the native values
    rng = np.random.RandomState(8)
    shapes = {'data': (2, 3, 16, 16), 'label': (2, 3, 5)}
    arg_shapes, _, _ = native.infer_shape(**shapes)
    args = {n: mx.nd.array(rng.normal(scale=0.3, size=s)) for n, s in zip(native.list_arguments(), arg_shapes)}
    args['label'] = mx.nd.array([[[0, .1, .1, .5, .6], [2, .4, .3, .9, .8], [-1] * 5],
                                 [[1, .2, .5, .7, .95], [-1] * 5, [-1] * 5]])
    heads = [mx.sym.Group([graph.get_internals()[n] for n in op_outputs]) for graph in (native, ours)]
    expected, got = (head.eval(ctx=mx.cpu(), **args) for head in heads)
    assert_same([g.asnumpy() for g in got], [e.asnumpy() for e in expected])


def test_mxnet_ssd_networks_have_the_native_names():
    """The vgg16_reduced SSD300 graphs of symbols/ (mxnet-ssd's builder) built on both."""
    config = presets.get_config('vgg16_reduced', 300)
    for build in (training_graph, inference_graph):
        native, ours = _built_both_ways(lambda ops: build(config, 20, 300, ops=ops))
        _assert_native_names(native, ours)
    internals = ours.get_internals().list_outputs()
    assert 'relu4_3_anchors_output' in internals and 'detection_output' in internals
    assert symbols.get_symbol('vgg16_reduced', 20, 300).list_outputs() == ['detection_output']
    training = symbols.get_symbol_train('vgg16_reduced', 20, 300).get_internals().list_outputs()
    assert {'multibox_target_loc_target', 'multibox_target_loc_mask', 'multibox_target_cls_target'} <= set(training)


def test_names_follow_the_current_name_manager():
    with mx.name.Prefix('ssd_'):
        native = mx.contrib.symbol.MultiBoxDetection(name='detection')
        ours = multibox.symbol.MultiBoxDetection(name='detection')
        target = multibox.symbol.MultiBoxTarget()
    assert ours.list_outputs() == native.list_outputs() == ['ssd_detection_output']
    assert ours.list_arguments() == native.list_arguments()
    assert target.list_outputs() == ['ssd_multiboxtarget0_loc_target', 'ssd_multiboxtarget0_loc_mask',
                                     'ssd_multiboxtarget0_cls_target']


def test_named_outputs_survive_json():
    graph = ssd_like_graph(multibox.symbol)
    loaded = mx.sym.load_json(graph.tojson())
    assert loaded.list_outputs() == graph.list_outputs()
    assert loaded.get_internals().list_outputs() == graph.get_internals().list_outputs()


def _training_gradients(ops, block_prior_inputs):
    """Parameter gradients of symbols/' mobilenet0.25 training graph at 128 pixels, one batch."""
    if block_prior_inputs:
        prior = ops.MultiBoxPrior
        ops = types.SimpleNamespace(MultiBoxTarget=ops.MultiBoxTarget, MultiBoxDetection=ops.MultiBoxDetection,
                                    MultiBoxPrior=lambda data, **kw: prior(mx.sym.BlockGrad(data), **kw))
    shapes = {'data': (2, 3, 128, 128), 'label': (2, 3, 5)}
    executor = training_graph(presets.get_config('mobilenet0.25', 128), 3, 128, ops=ops).simple_bind(mx.cpu(), **shapes)
    rng = np.random.RandomState(11)
    for name, array in executor.arg_dict.items():
        array[:] = rng.normal(0, 0.1, array.shape) if name != 'data' else rng.uniform(-100, 100, array.shape)
    executor.arg_dict['label'][:] = np.array([[[0, .1, .1, .5, .6], [2, .4, .3, .9, .8], [-1] * 5],
                                              [[1, .2, .5, .7, .95], [-1] * 5, [-1] * 5]])
    for name, array in executor.aux_dict.items():
        array[:] = 1 if name.endswith('_var') else 0
    outputs = [o.asnumpy() for o in executor.forward(is_train=True)]
    executor.backward()
    return outputs, {n: g.asnumpy() for n, g in executor.grad_dict.items() if n not in shapes}


def test_gradients_are_the_native_ones_when_the_prior_inputs_are_cut():
    """In a symbol executor too, the only gradient difference is the native MultiBoxPrior's zero
    gradient into its feature map (it changes how MXNet sums that map's gradient): with the
    priors' inputs in BlockGrad on both sides, every gradient is bit-identical."""
    native_outputs, native = _training_gradients(mx.contrib.symbol, block_prior_inputs=True)
    our_outputs, ours = _training_gradients(multibox.symbol, block_prior_inputs=True)
    assert (native_outputs[2] > 0).any()  # matched anchors: the losses have gradients
    assert_same(our_outputs, native_outputs)
    assert_same([ours[n] for n in native], list(native.values()))
