"""GluonCV weights in our symbols: same layer layout and anchors as GluonCV's SSD, and ImageNet
backbones from local ``.params`` files. No download: every GluonCV model is built with
``pretrained=False, pretrained_base=False`` and random weights."""
import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd
from gluoncv.model_zoo import get_model
from gluoncv.model_zoo.mobilenet import MobileNet
from gluoncv.model_zoo.ssd.anchor import SSDAnchorGenerator
from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300

import symbols
from symbols import convert
from symbols.ssd import layer_anchors

pytestmark = pytest.mark.parity


def _gluoncv_ssd(shape, seed=0):
    mx.random.seed(seed)
    net = get_model(f'ssd_{shape}_vgg16_atrous_voc', pretrained=False, pretrained_base=False)
    net.initialize()
    return net


def _close(ours, theirs, name):
    """Within 1e-4 of the output's scale (float32 sums over ~4600 terms round at ~1e-6)."""
    scale = max(1.0, float(np.abs(theirs).max()))
    assert ours.shape == theirs.shape, name
    assert np.abs(ours - theirs).max() <= 1e-4 * scale, (name, np.abs(ours - theirs).max(), scale)


def _our_heads(shape, num_classes, args, data, **overrides):
    """Our class predictions (B, C+1, N), box offsets (B, 4N), anchors (1, N, 4) for ``data``."""
    internals = symbols.get_symbol_train('vgg16_reduced', num_classes, shape,
                                         **overrides).get_internals()
    heads = mx.sym.Group([internals[f'multibox_{n}_output']
                          for n in ('cls_pred', 'loc_pred', 'anchors')])
    executor = heads.bind(mx.cpu(), args=dict(args, data=data), grad_req='null')
    return [o.asnumpy() for o in executor.forward()]


@pytest.mark.parametrize('shape, anchors', [(300, 8732), (512, 24564)])
def test_same_network_as_gluoncv_ssd(shape, anchors):
    """Same class predictions, box offsets and anchors as GluonCV's VOC SSD in training mode."""
    net = _gluoncv_ssd(shape)
    x = mx.nd.random.uniform(-2, 2, (1, 3, shape, shape))  # GluonCV's (pixels/255 - mean)/std
    with autograd.train_mode():
        cls_preds, box_preds, gluon_anchors = net(x)
    args, aux = convert.gluoncv_ssd_params(net, shape)
    assert not aux
    overrides = convert.gluoncv_overrides(net, shape)
    if shape == 300:  # our SSD300 preset is GluonCV's: no override needed
        config = symbols.get_config('vgg16_reduced', 300)
        np.testing.assert_allclose(overrides['sizes'], config.sizes, atol=1e-6)
        np.testing.assert_allclose(overrides['steps'], config.steps)
        overrides = {}
    # our input is mean-subtracted pixels: GluonCV's input times 255 * std
    ours = _our_heads(shape, 20, args, x * net.features.init_scale.data(), **overrides)
    _close(ours[0], cls_preds.transpose((0, 2, 1)).asnumpy(), 'class predictions')
    _close(ours[1], box_preds.reshape((1, -1)).asnumpy(), 'box offsets')
    _close(ours[2], convert.anchors_to_corner(gluon_anchors, shape).asnumpy(), 'anchors')
    assert ours[2].shape == (1, anchors, 4)


def test_same_anchors_as_gluoncv_ssd512():
    """At 512 GluonCV's first layer sizes differ from mxnet-ssd's; the overrides read from the
    network reproduce GluonCV's 24564 anchors, and only layer 0 differs from our preset."""
    net = get_model('ssd_512_vgg16_atrous_voc', pretrained=False, pretrained_base=False)
    net.anchor_generators.initialize()  # the anchor constants; no forward needed
    overrides = convert.gluoncv_overrides(net, 512)
    config = symbols.get_config('vgg16_reduced', 512)
    np.testing.assert_allclose(overrides['sizes'][0], (0.1, np.sqrt(0.1 * 0.15)), atol=1e-6)
    np.testing.assert_allclose(overrides['sizes'][1:], config.sizes[1:], atol=1e-6)
    ours = layer_anchors(symbols.get_config('vgg16_reduced', 512, **overrides), 512)
    for k, (grid, generator) in enumerate(zip(ours, net.anchor_generators)):
        assert isinstance(generator, SSDAnchorGenerator)
        rows, cols = grid.shape[:2]
        theirs = generator(mx.nd.zeros((1, 1, rows, cols)))  # (1, HWA, 4) centre, pixels
        _close(grid.reshape(1, -1, 4), convert.anchors_to_corner(theirs, 512).asnumpy(),
               f'anchors of layer {k}')
    assert sum(g.shape[0] * g.shape[1] * g.shape[2] for g in ours) == 24564


def test_load_gluoncv_ssd_from_local_file(tmp_path):
    net = _gluoncv_ssd(300, seed=3)
    net(mx.nd.zeros((1, 3, 300, 300)))  # finish deferred initialisation
    path = str(tmp_path / 'ssd_300_vgg16_atrous_voc.params')
    net.save_parameters(path)
    loaded = convert.load_gluoncv_ssd(path, 'ssd_300_vgg16_atrous_voc')
    args, _ = convert.gluoncv_ssd_params(loaded, 300)
    sym = symbols.get_symbol('vgg16_reduced', 20, 300)
    assert set(args) == set(sym.list_arguments()) - {'data'}
    np.testing.assert_array_equal(args['fc6_weight'].asnumpy(),
                                  net.features.stages[5][0].weight.data().asnumpy())


def _module(network, shape, contexts=(mx.cpu(),)):
    """Our inference graph bound in a Module, one image per device (same parameters as the
    training graph)."""
    sym = symbols.get_symbol(network, 3, shape)
    module = mx.mod.Module(sym, data_names=['data'], label_names=None, context=list(contexts))
    module.bind([('data', (len(contexts), 3, shape, shape))], for_training=False)
    return module


def test_vgg16_atrous_backbone_from_local_params(tmp_path):
    mx.random.seed(5)
    base = vgg16_atrous_300(pretrained=False)
    base.initialize()
    base(mx.nd.zeros((1, 3, 300, 300)))
    path = str(tmp_path / 'vgg16_atrous.params')
    base.save_parameters(path)
    # like GluonCV's ImageNet file: the body and the scale, no extra layers
    saved = mx.nd.load(path)
    mx.nd.save(path, {k: v for k, v in saved.items() if not k.startswith('extras.')})
    args, aux = convert.load_backbone_params('vgg16_reduced', path)
    assert not aux and 'relu4_3_scale' in args and 'fc7_weight' in args
    assert not any(n.startswith('multi_feat') for n in args)  # extras are never backbone
    assert len(args) == 2 * 15 + 1
    module = _module('vgg16_reduced', 300)
    module.init_params(mx.init.Xavier(), arg_params=args, aux_params=aux, allow_missing=True)
    got = module.get_params()[0]
    np.testing.assert_array_equal(got['conv1_1_weight'].asnumpy(),
                                  base.stages[0][0].weight.data().asnumpy())
    np.testing.assert_array_equal(got['relu4_3_scale'].asnumpy(),
                                  base.norm4.scale.data().asnumpy())


@pytest.mark.parametrize('network, multiplier', [('mobilenet0.25', 0.25), ('mobilenet1.0', 1.0)])
def test_mobilenet_backbone_from_local_params(tmp_path, network, multiplier):
    mx.random.seed(6)
    base = MobileNet(multiplier)  # GluonCV's ImageNet classifier, as in its model store
    base.initialize()
    base(mx.nd.zeros((1, 3, 64, 64)))
    path = str(tmp_path / f'{network}.params')
    base.save_parameters(path)
    args, aux = convert.load_backbone_params(network, path)
    assert len(args) == 27 + 2 * 27 and len(aux) == 2 * 27  # 27 convs, each with a BatchNorm
    module = _module(network, 128, contexts=(mx.cpu(0), mx.cpu(1)))
    module.init_params(mx.init.Xavier(), arg_params=args, aux_params=aux, allow_missing=True)
    got_args, got_aux = module.get_params()
    np.testing.assert_array_equal(got_args['mobilenet_conv26_weight'].asnumpy(),
                                  base.features[78].weight.data().asnumpy())
    np.testing.assert_array_equal(got_aux['mobilenet_batchnorm3_running_var'].asnumpy(),
                                  base.features[10].running_var.data().asnumpy())
