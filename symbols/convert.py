"""GluonCV weights for our symbols: whole VGG16 SSDs, and ImageNet backbones.

Input convention. GluonCV's networks take ``(pixels / 255 - mean) / std``; ours take
``pixels - 255 * mean`` (mxnet-ssd's mean subtraction, here with mean pixels
``(123.675, 116.28, 103.53)``). GluonCV's VGG multiplies its input by ``255 * std`` first (its
``init_scale`` constant) and our MobileNet body divides by it, so the same image gives the same
layer values in both.

Anchors. GluonCV's anchors are ``(cx, cy, w, h)`` in input pixels; ``MultiBoxPrior``'s are
``(xmin, ymin, xmax, ymax)`` normalised by the input size. ``gluoncv_overrides`` reads a GluonCV
network's anchor constants and returns the ``sizes``/``steps`` that reproduce them: none change
for ``ssd_300_vgg16_atrous_voc`` (our vgg16_reduced 300 preset), the first layer's sizes change
for ``ssd_512_vgg16_atrous_voc`` (GluonCV starts at 0.1, mxnet-ssd at 0.07).
"""
import mxnet as mx
from gluoncv.model_zoo import get_model
from gluoncv.model_zoo.mobilenet import MobileNet
from gluoncv.model_zoo.ssd.vgg_atrous import vgg16_atrous_300

from .backbones import MOBILENET_PREFIX, VGG16_CONV_NAMES
from .presets import get_config
from .ssd import feature_names

__all__ = ['gluoncv_ssd_params', 'load_gluoncv_ssd', 'gluoncv_overrides',
           'load_backbone_params', 'anchors_to_corner']


def load_gluoncv_ssd(path, model_name='ssd_300_vgg16_atrous_voc'):
    """Build GluonCV's ``model_name`` (no download) and load its ``.params`` file from ``path``.

    Returns the GluonCV network; pass it to ``gluoncv_ssd_params`` and ``gluoncv_overrides``.
    """
    net = get_model(model_name, pretrained=False, pretrained_base=False)
    net.load_parameters(path)
    return net


def gluoncv_ssd_params(net, data_shape):
    """``(arg_params, aux_params)`` of our ``vgg16_reduced`` symbol from a GluonCV VGG16 SSD.

    ``net`` is an initialised ``gluoncv.model_zoo.ssd.SSD`` on ``vgg16_atrous_{300,512}``
    (e.g. ``ssd_300_vgg16_atrous_voc``); build our symbol with the same ``num_classes`` and
    ``**gluoncv_overrides(net, data_shape)``.
    """
    config = get_config('vgg16_reduced', data_shape)
    pairs = _vgg_extractor_pairs(net.features, config)
    for name, (cls_conv, box_conv, _) in zip(feature_names(config), _ssd_heads(net)):
        pairs += _conv_pairs(cls_conv, f"{name}_cls_pred_conv")
        pairs += _conv_pairs(box_conv, f"{name}_loc_pred_conv")
    return {name: param.data().copy() for name, param in pairs}, {}


def gluoncv_overrides(net, data_shape):
    """Preset ``sizes`` and ``steps`` that give the anchors of GluonCV SSD ``net`` at ``data_shape``.

    Read from the anchor constants: at location (0, 0) the first anchor is ``s_k`` wide and the
    second ``sqrt(s_k * s_k+1)``; the step is the distance between neighbouring centres.
    """
    sizes, steps = [], []
    for _, _, anchor_constant in _ssd_heads(net):
        anchors = anchor_constant.data().asnumpy()  # (1, 1, H, W, A*4) cx, cy, w, h in pixels
        first = anchors[0, 0, 0, 0].reshape(-1, 4)
        sizes.append((float(first[0, 2]) / data_shape, float(first[1, 2]) / data_shape))
        steps.append(float(anchors[0, 0, 0, 1, 0] - anchors[0, 0, 0, 0, 0]))
    return {'sizes': tuple(sizes), 'steps': tuple(steps)}


def load_backbone_params(network, path):
    """``(arg_params, aux_params)`` of ``network``'s body from a GluonCV ImageNet ``.params`` file.

    ``vgg16_reduced`` reads GluonCV's ``vgg16_atrous`` file (conv1_1..fc7 and the relu4_3 scale;
    layers missing from the file are left out), ``mobilenet1.0``/``mobilenet0.25`` read
    ``mobilenet1.0``/``mobilenet0.25``. Use the result as the pretrained base of a training run
    (``Module.set_params(..., allow_missing=True)`` or ``init_params(arg_params=...)``);
    online users get the files from GluonCV's model store, e.g.
    ``gluoncv.model_zoo.model_store.get_model_file('vgg16_atrous')``.
    """
    config = get_config(network, 300)  # the body is the same in every variant
    if network == 'vgg16_reduced':
        net = vgg16_atrous_300(pretrained=False)
        net.load_parameters(path, allow_missing=True, ignore_extra=True)
        pairs = _vgg_extractor_pairs(net, config)
    else:
        multiplier = float(network[len('mobilenet'):])
        net = MobileNet(multiplier, prefix=MOBILENET_PREFIX)
        net.load_parameters(path)
        pairs = [(p.name, p) for p in net.collect_params().values()]
    body = config.body(mx.sym.var('data'))
    inputs = mx.sym.Group(list(body.values()))
    loaded = {name: param.data().copy() for name, param in pairs if _is_initialized(param)}
    args = {n: loaded[n] for n in inputs.list_arguments() if n in loaded}
    aux = {n: loaded[n] for n in inputs.list_auxiliary_states() if n in loaded}
    args.update({n: v for n, v in loaded.items() if n.endswith('_scale')})
    return args, aux


def _ssd_heads(net):
    """Per output layer of GluonCV SSD ``net``: class predictor and box predictor ``Conv2D``, and
    the anchor constant (1, 1, H, W, A*4) of its ``SSDAnchorGenerator``.

    GluonCV documents no API for an SSD's parts; these are the attributes of GluonCV 0.10.5's
    ``SSD`` (``class_predictors``/``box_predictors`` of ``ConvPredictor``, ``anchor_generators``).
    """
    return [(cls.predictor, box.predictor, generator.anchors) for cls, box, generator
            in zip(net.class_predictors, net.box_predictors, net.anchor_generators)]


def _vgg_extractor_pairs(features, config):
    """(our name, GluonCV parameter) of a ``VGGAtrousExtractor``: body, relu4_3 scale, extras.

    Read from GluonCV 0.10.5's attributes (``stages``, ``norm4.scale``, ``extras``): GluonCV
    documents no API for the extractor's layers.
    """
    convs = [b for stage in features.stages for b in stage if isinstance(b, mx.gluon.nn.Conv2D)]
    if len(convs) != len(VGG16_CONV_NAMES):
        raise ValueError(f"expected a VGG16 atrous body with {len(VGG16_CONV_NAMES)} "
                         f"convolutions, got {len(convs)}")
    pairs = [pair for conv, name in zip(convs, VGG16_CONV_NAMES) for pair in _conv_pairs(conv, name)]
    pairs.append(('relu4_3_scale', features.norm4.scale))
    extras = [k for k, layer in enumerate(config.from_layers) if not layer]
    for k, extra in zip(extras, features.extras):
        conv_1x1, conv_3x3 = [b for b in extra if isinstance(b, mx.gluon.nn.Conv2D)]
        pairs += _conv_pairs(conv_1x1, f"multi_feat_{k}_conv_1x1_conv")
        pairs += _conv_pairs(conv_3x3, f"multi_feat_{k}_conv_3x3_conv")
    return pairs


def _conv_pairs(conv, name):
    """(``{name}_weight``, weight), (``{name}_bias``, bias) of a Gluon ``Conv2D``."""
    return [(f"{name}_weight", conv.weight), (f"{name}_bias", conv.bias)]


def _is_initialized(param):
    """Whether ``param`` holds data (``load_parameters(allow_missing=True)`` skips some)."""
    try:
        param.data()
    except (RuntimeError, mx.base.MXNetError):
        return False
    return True


def anchors_to_corner(anchors, data_shape):
    """GluonCV anchors (1, N, 4) ``(cx, cy, w, h)`` pixels -> (1, N, 4) corner, normalised."""
    cx, cy, w, h = (anchors[..., i] for i in range(4))
    corner = mx.nd.stack(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, axis=-1)
    return corner / data_shape

