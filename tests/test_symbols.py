"""symbols/: presets, graph structure, Module training on two CPU contexts, the anchor picture.

The native contrib ops appear here only as the oracle of ``test_same_as_native_ops``.
"""
import json
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

import symbols
from symbols import presets
from symbols.ssd import inference_graph, layer_anchors, training_graph

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIGHT, LIGHT_SHAPE = 'mobilenet0.25', 128  # the light network at a tiny input keeps tests fast


def _num_anchors(sym, shape):
    _, out_shapes, _ = sym.infer_shape(data=(1, 3, shape, shape))
    return out_shapes[0][1]


@pytest.mark.parametrize('shape, expected', [(300, 8732), (512, 24564)])
def test_vgg16_reduced_published_anchor_counts(shape, expected):
    assert _num_anchors(symbols.get_symbol('vgg16_reduced', 20, shape), shape) == expected
    assert presets.get_config('vgg16_reduced', shape).base_shape == shape


def test_any_data_shape_anchors_follow_feature_maps():
    # 320: maps 40, 20, 10, 5, 3, 1 with the 300 layout; steps are automatic off the base shape
    config = presets.get_config('vgg16_reduced', 320)
    assert config.prior_steps(320) == (-1.0,) * 6
    assert _num_anchors(symbols.get_symbol('vgg16_reduced', 20, 320), 320) == \
        40 * 40 * 4 + 20 * 20 * 6 + 10 * 10 * 6 + 5 * 5 * 6 + 3 * 3 * 4 + 4
    grids = layer_anchors(presets.get_config(LIGHT, LIGHT_SHAPE), (LIGHT_SHAPE, 96))
    assert [g.shape[:2] for g in grids] == [(16, 12), (8, 6), (4, 3), (2, 2), (1, 1), (1, 1),
                                            (1, 1)]


def test_mobilenet_small_inputs_predict_from_stride_8():
    # below 300 px the first layer is the stride-8 relu10 (32x32 at 256), from 300 on mxnet-ssd's
    small, large = presets.get_config(LIGHT, 256), presets.get_config(LIGHT, 300)
    assert small.from_layers[:3] == ('relu10', 'relu22', 'relu26')
    assert large.from_layers[:2] == ('relu22', 'relu26')
    assert _num_anchors(symbols.get_symbol(LIGHT, 4, 256), 256) == \
        32 * 32 * 4 + 16 * 16 * 6 + 8 * 8 * 6 + 4 * 4 * 6 + 2 * 2 * 6 + 4 + 4


def test_mobilenet_extra_layers_have_batchnorm_vgg_does_not():
    def extra_batchnorms(network, shape):
        nodes = json.loads(symbols.get_symbol(network, 4, shape).tojson())['nodes']
        return [n['name'] for n in nodes if n['op'] == 'BatchNorm' and n['name'].startswith('multi_feat')]
    assert extra_batchnorms(LIGHT, 256)[:2] == ['multi_feat_3_conv_1x1_bn', 'multi_feat_3_conv_3x3_bn']
    assert extra_batchnorms('vgg16_reduced', 300) == []


def test_steps_used_only_at_the_base_shape():
    config = presets.get_config('vgg16_reduced', 300)
    assert config.prior_steps(300) == tuple(s / 300 for s in (8, 16, 32, 64, 100, 300))
    grid = layer_anchors(config, 300)[4]  # 3x3 map, step 100 px: centres at 50, 150, 250 px
    np.testing.assert_allclose(grid[:, :, 0, 0::2].mean(-1) * 300, [[50, 150, 250]] * 3,
                               atol=1e-3)


def test_mxnet_ssd_scale_schedule():
    np.testing.assert_allclose(presets.caffe_sizes(0.2, 0.9, 6),
                               [(.1, .141), (.2, .272), (.37, .447), (.54, .619), (.71, .790),
                                (.88, .961)], atol=5e-4)
    np.testing.assert_allclose(presets.caffe_sizes(0.15, 0.9, 7),
                               [(.07, .1025), (.15, .212), (.3, .367), (.45, .520), (.6, .671),
                                (.75, .822), (.9, .972)], atol=5e-4)


def test_unknown_network_lists_known_ones():
    with pytest.raises(ValueError) as error:
        symbols.get_symbol_train('vgg17', 20, 300)
    for name in ('mobilenet0.25', 'mobilenet1.0', 'vgg16_reduced'):
        assert name in str(error.value)


def test_an_input_smaller_than_the_pooling_windows_names_the_layer_and_the_smallest_size():
    smallest = next(size for size in range(250, 300) if fits('vgg16_reduced', size))  # found by trying
    for graph in (symbols.get_symbol, symbols.get_symbol_train):
        with pytest.raises(ValueError) as error:
            graph('vgg16_reduced', 20, 16)
        assert str(error.value) == ('data shape 16x16 is too small for vgg16_reduced: the window of layer '
                                    f'multi_feat_4_conv_3x3_conv is larger than its input; the smallest square '
                                    f'input it takes is {smallest}')
    symbols.get_symbol('vgg16_reduced', 20, smallest)
    symbols.get_symbol('mobilenet0.25', 4, 8)  # stride-2 layers on 1x1 maps stay 1x1: any size fits


def fits(network, size):
    """Whether MXNet's own shape inference accepts the unchecked graph at ``size``."""
    graph = inference_graph(presets.get_config(network, size), 20, size)
    try:
        graph.infer_shape_partial(data=(1, 3, size, size))
        return True
    except mx.base.MXNetError:
        return False


def test_inconsistent_preset_names_the_counts():
    sizes = presets.get_config('vgg16_reduced', 300).sizes[:5]
    with pytest.raises(ValueError, match=r'from_layers=6.*sizes=5'):
        symbols.get_symbol('vgg16_reduced', 20, 300, sizes=sizes)
    with pytest.raises(ValueError, match=r'ratios=6.*steps=4'):
        presets.get_config('vgg16_reduced', 300, steps=[8, 16, 32, 64])
    with pytest.raises(ValueError, match='unknown preset setting'):
        presets.get_config('vgg16_reduced', 300, size=[])


def test_every_preset_is_consistent():
    for network, variants in presets.PRESETS.items():
        for config in variants:
            assert len(config.num_anchors) == len(config.from_layers), network


@pytest.mark.parametrize('network', symbols.network_names())
def test_graphs_use_multibox_ops_only(network):
    for sym in (symbols.get_symbol_train(network, 3, 512), symbols.get_symbol(network, 3, 512)):
        assert '_contrib_MultiBox' not in sym.tojson()


def test_targets_and_monitor_outputs_carry_no_gradient():
    sym = symbols.get_symbol_train(LIGHT, 3, LIGHT_SHAPE)
    nodes = json.loads(sym.tojson())['nodes']
    blocked = {n['name'] for n in nodes if n['op'] == 'BlockGrad'}
    assert {'multibox_target_loc_blocked', 'multibox_target_mask_blocked',
            'multibox_target_cls_blocked'} <= blocked
    grad_scales = {n['name']: n.get('attrs', {}).get('grad_scale') for n in nodes
                   if n['op'] == 'MakeLoss'}
    assert grad_scales['cls_label'] == '0' and grad_scales['det_out'] == '0'
    assert sym.list_outputs() == ['cls_prob_output', 'loc_loss_output', 'cls_label_output',
                                  'det_out_output']


def test_inference_output_shape():
    sym = symbols.get_symbol('vgg16_reduced', 20, 300)
    assert sym.infer_shape(data=(2, 3, 300, 300))[1] == [(2, 8732, 6)]
    sym = symbols.get_symbol(LIGHT, 4, LIGHT_SHAPE, nms_thresh=0.5, nms_topk=50)
    module = mx.mod.Module(sym, data_names=['data'], label_names=None)
    module.bind([('data', (2, 3, LIGHT_SHAPE, LIGHT_SHAPE))], for_training=False)
    module.init_params(mx.init.Xavier())
    module.forward(mx.io.DataBatch([mx.nd.random.uniform(-100, 100, (2, 3, 128, 128))]),
                   is_train=False)
    det = module.get_outputs()[0].asnumpy()
    assert det.shape == (2, _num_anchors(sym, LIGHT_SHAPE), 6)
    kept = det[det[:, :, 0] >= 0]
    assert np.all((kept[:, 0] < 4) & (kept[:, 1] >= 0.01) & (kept[:, 1] <= 1))


def _batch(batch_size, shape, seed):
    rng = np.random.RandomState(seed)
    data = rng.uniform(-120, 120, (batch_size, 3, shape, shape))
    label = np.full((batch_size, 3, 5), -1.0)
    for i in range(batch_size):
        for j in range(1 + i % 3):
            xy = rng.uniform(0, 0.6, 2)
            wh = rng.uniform(0.15, 0.4, 2)
            label[i, j] = [rng.randint(3), xy[0], xy[1], xy[0] + wh[0], xy[1] + wh[1]]
    return mx.io.DataBatch([mx.nd.array(data)], [mx.nd.array(label)])


def _train_module(sym, contexts, batch_size, shape):
    module = mx.mod.Module(sym, data_names=['data'], label_names=['label'], context=contexts)
    module.bind([('data', (batch_size, 3, shape, shape))], [('label', (batch_size, 3, 5))])
    mx.random.seed(7)
    module.init_params(mx.init.Xavier(rnd_type='gaussian', factor_type='out', magnitude=2))
    module.init_optimizer(optimizer='sgd', optimizer_params={
        'learning_rate': 0.01, 'momentum': 0.9, 'wd': 5e-4, 'rescale_grad': 1 / len(contexts)})
    return module


def test_module_trains_on_two_cpu_contexts():
    sym = symbols.get_symbol_train(LIGHT, 3, LIGHT_SHAPE)
    module = _train_module(sym, [mx.cpu(0), mx.cpu(1)], 4, LIGHT_SHAPE)
    before = module.get_params()[0]['relu22_cls_pred_conv_weight'].asnumpy()
    for step in range(2):
        module.forward_backward(_batch(4, LIGHT_SHAPE, step))
        module.update()
    cls_prob, loc_loss, cls_label, det = module.get_outputs()
    num_anchors = _num_anchors(symbols.get_symbol(LIGHT, 3, LIGHT_SHAPE), LIGHT_SHAPE)
    assert cls_prob.shape == (4, 4, num_anchors) and det.shape == (4, num_anchors, 6)
    assert loc_loss.shape == (4, 4 * num_anchors) and cls_label.shape == (4, num_anchors)
    assert np.isfinite(loc_loss.asnumpy()).all() and (cls_label.asnumpy() > 0).any()
    after = module.get_params()[0]['relu22_cls_pred_conv_weight'].asnumpy()
    assert np.isfinite(after).all() and not np.allclose(before, after)


def test_same_as_native_ops():
    """The graph built on multibox equals the same graph built on the contrib ops: all four
    outputs of a training forward bit for bit, and the parameter gradients."""
    config = presets.get_config(LIGHT, LIGHT_SHAPE)
    batch = _batch(2, LIGHT_SHAPE, 3)
    shapes = {'data': batch.data[0].shape, 'label': batch.label[0].shape}
    values, results = None, []
    for kwargs in ({}, {'ops': mx.sym.contrib}):
        executor = training_graph(config, 3, LIGHT_SHAPE, **kwargs).simple_bind(mx.cpu(), **shapes)
        if values is None:
            mx.random.seed(11)
            values = {n: mx.nd.random.normal(0, 0.1, a.shape) for n, a in executor.arg_dict.items()}
            values.update(data=batch.data[0], label=batch.label[0])
        for name, array in executor.arg_dict.items():
            array[:] = values[name]
        for name, array in executor.aux_dict.items():
            array[:] = 1 if name.endswith('_var') else 0
        outputs = [o.asnumpy() for o in executor.forward(is_train=True)]
        executor.backward()
        grads = {n: g.asnumpy() for n, g in executor.grad_dict.items() if n not in shapes}
        results.append((outputs, grads))
    (ours, our_grads), (native, native_grads) = results
    for name, a, b in zip(('cls_prob', 'loc_loss', 'cls_label', 'det'), ours, native):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert (native[2] > 0).any()  # some anchors matched, so the losses have gradients
    for name, native_grad in native_grads.items():  # float32 sums in another order
        scale = max(1e-3, float(np.abs(native_grad).max()))
        assert np.abs(our_grads[name] - native_grad).max() <= 1e-5 * scale, name


def _training_outputs(label, seed=11, bad_bias=None, **kwargs):
    """Training forward of the light graph on random weights (seeded, so the same for every
    ``kwargs``): ``cls_prob (B, C+1, N)``, ``cls_label (B, N)``, ``cls_pred (B, C+1, N)`` and
    the largest gradient of the class predictors' weights. ``bad_bias``: a value put into a
    class predictor's bias."""
    config = presets.get_config(LIGHT, LIGHT_SHAPE)
    sym = training_graph(config, 3, LIGHT_SHAPE, **kwargs)
    group = mx.sym.Group([sym[0], sym[2], sym.get_internals()['multibox_cls_pred_output']])
    shapes = {'data': (label.shape[0], 3, LIGHT_SHAPE, LIGHT_SHAPE), 'label': label.shape}
    executor = group.simple_bind(mx.cpu(), **shapes)
    rng = np.random.RandomState(seed)
    for name, array in executor.arg_dict.items():
        array[:] = rng.normal(0, 0.1, array.shape) if name != 'label' else label
    for name, array in executor.aux_dict.items():
        array[:] = 1 if name.endswith('_var') else 0
    if bad_bias is not None:
        executor.arg_dict['relu22_cls_pred_conv_bias'][:] = bad_bias
    cls_prob, cls_label, cls_pred = [o.asnumpy() for o in executor.forward(is_train=True)]
    # the loss's own gradient only: the monitoring outputs get zero head gradients
    executor.backward([mx.nd.ones_like(o) if k == 0 else mx.nd.zeros_like(o)
                       for k, o in enumerate(executor.outputs)])
    largest = max(float(np.abs(g.asnumpy()).max()) for n, g in executor.grad_dict.items()
                  if n.endswith('_cls_pred_conv_weight'))
    return cls_prob, cls_label, cls_pred, largest


def _background_prob(cls_pred):
    """float64 softmax probability of class 0, ``(B, N)``."""
    shifted = np.exp(cls_pred - cls_pred.max(axis=1, keepdims=True))
    return shifted[:, 0] / shifted.sum(axis=1)


def test_images_without_objects_are_negatives_images_with_objects_unchanged():
    """An image without objects: its EMPTY_IMAGE_NEGATIVES lowest background probabilities get
    class 0, the rest -1 (the native op ignores them all). The other images of the batch keep
    the native op's targets bit for bit."""
    label = _batch(3, LIGHT_SHAPE, 5).label[0].asnumpy()
    label[1] = -1
    _, ours, cls_pred, _ = _training_outputs(label)
    _, native, native_pred, _ = _training_outputs(label, ops=mx.sym.contrib,
                                                  minimum_negative_samples=0)
    np.testing.assert_array_equal(cls_pred, native_pred)
    np.testing.assert_array_equal(ours[[0, 2]], native[[0, 2]])
    assert (native[[0, 2]] > 0).any() and (native[1] == -1).all()
    mined = ours[1] == 0
    assert mined.sum() == symbols.ssd.EMPTY_IMAGE_NEGATIVES == 32
    assert (ours[1][~mined] == -1).all()
    prob = _background_prob(cls_pred.astype(np.float64))[1]
    assert prob[mined].max() <= prob[~mined].min() + 1e-6  # the hardest anchors


def test_all_background_batch_trains_the_class_predictors():
    """An all-background batch gives a non-zero cross entropy on its class-0 anchors and a
    gradient; with minimum_negative_samples=0 (native semantics) it gives nothing."""
    label = -np.ones((2, 3, 5), np.float32)
    cls_prob, cls_label, _, grad = _training_outputs(label, minimum_negative_samples=7)
    assert ((cls_label == 0).sum(axis=1) == 7).all() and (cls_label <= 0).all()
    picked = np.take_along_axis(cls_prob, np.maximum(cls_label, 0)[:, None].astype(int), 1)[:, 0]
    cross_entropy = -np.log(picked[cls_label == 0]).mean()
    assert np.isfinite(cross_entropy) and cross_entropy > 0.01
    assert grad > 0
    _, cls_label, _, grad = _training_outputs(label, minimum_negative_samples=0)
    assert (cls_label == -1).all() and grad == 0


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_logits_give_a_nan_loss_not_a_graph_error(bad):
    """MultiBoxTarget refuses mining on NaN probabilities; the training graph feeds it finite
    logits, so a diverged network shows up as a NaN loss (train.py stops on it)."""
    label = _batch(2, LIGHT_SHAPE, 6).label[0].asnumpy()
    cls_prob, cls_label, cls_pred, _ = _training_outputs(label, bad_bias=bad)
    assert not np.isfinite(cls_pred).all() and np.isnan(cls_prob).any()
    assert (cls_label > 0).any() and (cls_label == 0).any()


def test_inference_same_as_native_ops():
    """The inference graph on multibox gives the native graph's detections bit for bit."""
    config = presets.get_config(LIGHT, LIGHT_SHAPE)
    data = _batch(2, LIGHT_SHAPE, 4).data[0]
    values, outputs = None, []
    for kwargs in ({}, {'ops': mx.sym.contrib}):
        sym = inference_graph(config, 3, LIGHT_SHAPE, **kwargs)
        executor = sym.simple_bind(mx.cpu(), data=data.shape, grad_req='null')
        if values is None:
            mx.random.seed(12)
            values = {n: mx.nd.random.normal(0, 0.1, a.shape) for n, a in executor.arg_dict.items()}
            values['data'] = data
        for name, array in executor.arg_dict.items():
            array[:] = values[name]
        for name, array in executor.aux_dict.items():
            array[:] = 1 if name.endswith('_var') else 0
        outputs.append(executor.forward()[0].asnumpy())
    assert (outputs[1][:, :, 0] >= 0).sum() > 10  # enough kept detections to compare
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_visualize_anchors_writes_png(tmp_path):
    output = tmp_path / 'anchors.png'
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'visualize_anchors.py'),
                    '--network', 'vgg16_reduced', '--data-shape', '300', '--layer', '3',
                    '--locations', '2,2;0,4', '--output', str(output)],
                   check=True, env=env, cwd=str(tmp_path), capture_output=True)
    assert output.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
