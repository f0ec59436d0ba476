"""SSD bodies as Symbols: ``body(data) -> {layer name: Symbol}``.

Every body takes ``data`` as RGB pixels in 0..255 with the per-channel mean subtracted
(mxnet-ssd's input convention), shape ``(B, 3, H, W)``, and returns the layers a preset may
name in ``from_layers``.
"""
import mxnet as mx
from gluoncv.model_zoo.mobilenet import MobileNet

__all__ = ['vgg16_reduced', 'mobilenet', 'MOBILENET_PREFIX', 'IMAGENET_STD', 'VGG16_CONV_NAMES']

# GluonCV's ImageNet models expect (pixels / 255 - mean) / std
IMAGENET_STD = (0.229, 0.224, 0.225)
# fixed name prefix of the GluonCV MobileNet parameters inside our graphs
MOBILENET_PREFIX = 'mobilenet_'

# VGG16 stages: (number of 3x3 convolutions, filters)
_VGG16_STAGES = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
# the convolutions of vgg16_reduced, in order
VGG16_CONV_NAMES = tuple(f"conv{stage}_{i}" for stage, (depth, _) in enumerate(_VGG16_STAGES, 1)
                         for i in range(1, depth + 1)) + ('fc6', 'fc7')


def vgg16_reduced(data):
    """VGG16-reduced (SSD's atrous VGG16): conv1_1..conv5_3, pool5 3x3/1, fc6, fc7.

    fc6 is a 3x3 convolution with dilation 6 and 1024 filters, fc7 a 1x1 convolution with 1024
    filters (the reduced fully-connected layers of the SSD paper). pool1..pool4 are 2x2/2 max
    poolings with the "full" (ceil) convention, as Caffe and GluonCV; mxnet-ssd uses it on pool3
    only, which gives the same maps at 300 and 512. Strides: relu4_3 8, relu7 16.

    Returns ``{'relu4_3': (B, 512, H/8, W/8), 'relu7': (B, 1024, H/16, W/16)}`` (ceil sizes).
    """
    x = data
    layers = {}
    for stage, (depth, filters) in enumerate(_VGG16_STAGES, start=1):
        for i in range(1, depth + 1):
            x = _conv_relu(x, f"conv{stage}_{i}", f"relu{stage}_{i}", filters, kernel=3, pad=1)
        layers[x.name] = x
        if stage < 5:
            x = mx.sym.Pooling(x, pool_type='max', kernel=(2, 2), stride=(2, 2),
                               pooling_convention='full', name=f"pool{stage}")
    x = mx.sym.Pooling(x, pool_type='max', kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                       name='pool5')
    x = _conv_relu(x, 'fc6', 'relu6', 1024, kernel=3, pad=6, dilate=6)
    x = _conv_relu(x, 'fc7', 'relu7', 1024, kernel=1, pad=0)
    layers['relu7'] = x
    return layers


def mobilenet(data, multiplier):
    """GluonCV's MobileNet (``gluoncv.model_zoo.mobilenet.MobileNet``) body, as a Symbol.

    The data are scaled by ``1 / (255 * std)`` first, so GluonCV's ImageNet weights see their
    own input convention. Parameter names are GluonCV's with the prefix ``mobilenet_``
    (``mobilenet_conv0_weight``, ``mobilenet_batchnorm0_gamma``...).

    Returns every ReLU by its GluonCV name (``relu0`` .. ``relu26``); ``relu22`` is the last
    layer at stride 16 (``512 * multiplier`` channels), ``relu26`` the last at stride 32.
    """
    net = MobileNet(multiplier, prefix=MOBILENET_PREFIX)
    x = mx.sym.broadcast_mul(data, _channel_constant([1 / (255 * s) for s in IMAGENET_STD]))
    layers = {}
    for block in net.features:
        if isinstance(block, mx.gluon.nn.GlobalAvgPool2D):
            break
        x = block(x)
        if isinstance(block, mx.gluon.nn.Activation):
            layers[block.name[len(MOBILENET_PREFIX):]] = x
    return layers


def _conv_relu(x, conv_name, relu_name, filters, kernel, pad, dilate=1):
    """Convolution (``conv_name``, square kernel, stride 1) followed by ReLU (``relu_name``)."""
    x = mx.sym.Convolution(x, num_filter=filters, kernel=(kernel, kernel), pad=(pad, pad),
                           dilate=(dilate, dilate), name=conv_name)
    return mx.sym.Activation(x, act_type='relu', name=relu_name)


def _channel_constant(values):
    """A ``(1, C, 1, 1)`` constant Symbol holding ``values`` (no parameter to learn or load)."""
    parts = [mx.sym.full((1, 1, 1, 1), float(v)) for v in values]
    return mx.sym.concat(*parts, dim=1)
