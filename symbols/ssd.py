"""SSD training and inference Symbols built on the project's MultiBox operators.

The graphs are mxnet-ssd's (``symbol/symbol_builder.py``): body -> extra layers -> per-layer
3x3 class and box predictors with ``MultiBoxPrior`` anchors -> either ``MultiBoxTarget`` and the
two losses (training) or softmax and ``MultiBoxDetection`` (inference). The operators come from
``multibox.symbol``; the JSON of a graph built here holds no native MultiBox node.

Parameter names follow mxnet-ssd (``conv1_1_weight``, ``relu4_3_scale``,
``multi_feat_2_conv_1x1_conv_weight``, ``relu7_cls_pred_conv_weight``...).

Inputs: ``data`` (B, 3, H, W) mean-subtracted RGB pixels; ``label`` (B, M, 5+) rows
``[class, xmin, ymin, xmax, ymax, ...]`` normalised to [0, 1], padded with -1 rows.
"""
import re

import mxnet as mx

import multibox.symbol as _multibox
from multibox import matcher, mining

from .presets import _as_hw, get_config

__all__ = ['get_symbol_train', 'get_symbol', 'check_data_shape', 'training_graph', 'inference_graph',
           'feature_names', 'layer_anchors', 'VARIANCES', 'EMPTY_IMAGE_NEGATIVES', 'NMS_THRESH', 'NMS_TOPK']

VARIANCES = (0.1, 0.1, 0.2, 0.2)
# hard negatives of an image without objects: about what an image with objects mines (200
# generated synthetic images, mobilenet0.25 at 256: 10.8 positives x ratio 3 = 32.4 negatives)
EMPTY_IMAGE_NEGATIVES = 32
_IGNORE = -1
# The detection defaults of every graph and script (mxnet-ssd's and Caffe SSD's): class-wise NMS at
# IoU 0.45 over the 400 best-scoring boxes. ssd.options gives them to the scripts' --nms/--nms-topk.
NMS_THRESH, NMS_TOPK = 0.45, 400


def get_symbol_train(network, num_classes, data_shape, nms_thresh=NMS_THRESH, force_suppress=False,
                     nms_topk=NMS_TOPK, minimum_negative_samples=EMPTY_IMAGE_NEGATIVES, **overrides):
    """Training Symbol of a named SSD network (mxnet-ssd's ``get_symbol_train``).

    ``num_classes`` counts object classes, background excluded. ``overrides`` replace preset
    settings (``sizes``, ``ratios``, ``steps``...; see ``symbols.presets.SSDConfig``). The
    Symbol groups four outputs: ``cls_prob`` (B, C+1, N) (SoftmaxOutput loss on the class
    targets, ignore -1, "valid" normalisation), ``loc_loss`` (B, 4N) (smooth-L1 on the masked
    box offsets), and two gradient-free monitoring outputs: ``cls_label`` (B, N) and the
    detections ``det_out`` (B, N, 6) (mxnet-ssd validates with them; ``ssd.training.engine`` trains the
    first three only). ``minimum_negative_samples``: hard negatives taken from each image without
    objects (see ``training_graph``).
    """
    config = get_config(network, data_shape, **overrides)
    check_data_shape(network, data_shape, **overrides)
    return training_graph(config, num_classes, data_shape, nms_thresh=nms_thresh,
                          force_suppress=force_suppress, nms_topk=nms_topk,
                          minimum_negative_samples=minimum_negative_samples)


def get_symbol(network, num_classes, data_shape, nms_thresh=NMS_THRESH, force_suppress=False,
               nms_topk=NMS_TOPK, **overrides):
    """Inference Symbol of a named SSD network, output ``(B, N, 6)`` rows
    ``[class_id, score, xmin, ymin, xmax, ymax]`` (class -1 for suppressed/background rows)."""
    config = get_config(network, data_shape, **overrides)
    check_data_shape(network, data_shape, **overrides)
    return inference_graph(config, num_classes, data_shape, nms_thresh=nms_thresh,
                           force_suppress=force_suppress, nms_topk=nms_topk)


def check_data_shape(network, data_shape, **overrides):
    """Raise ValueError when ``network`` cannot take a ``data_shape`` input (int or (H, W)): a
    pooling or convolution window larger than its input (VGG16's SSD300 needs about 257 pixels).
    The message names the layer and the smallest square size that works."""
    problem = _size_problem(network, data_shape, overrides)
    if problem is None:
        return
    smallest, largest = 1, 4096
    if _size_problem(network, largest, overrides) is not None:
        raise ValueError(f"{network} cannot take a {_shape_text(data_shape)} input ({problem})")
    while smallest < largest:  # windows only fit better as the input grows: bisect
        middle = (smallest + largest) // 2
        smallest, largest = (middle + 1, largest) if _size_problem(network, middle, overrides) else (smallest, middle)
    raise ValueError(f"data shape {_shape_text(data_shape)} is too small for {network}: {problem}; "
                     f"the smallest square input it takes is {smallest}")


def _size_problem(network, data_shape, overrides):
    """None if the layers of ``network`` fit a ``data_shape`` input, else which layer does not."""
    height, width = _as_hw(data_shape)
    graph = _multibox_layers(get_config(network, data_shape, **overrides), 1, data_shape, _multibox)[2]
    try:  # infer_shape_partial: the same checks as infer_shape, without its print to stdout on failure
        graph.infer_shape_partial(data=(1, 3, height, width))
    except mx.base.MXNetError as error:
        found = re.search(r'Error in operator (\S+?):', str(error))
        return f"the window of layer {found.group(1)} is larger than its input" if found else str(error).split('\n')[0]
    return None


def _shape_text(data_shape):
    height, width = _as_hw(data_shape)
    return f'{height}x{width}'


def training_graph(config, num_classes, data_shape, nms_thresh=NMS_THRESH, force_suppress=False,
                   nms_topk=NMS_TOPK, minimum_negative_samples=EMPTY_IMAGE_NEGATIVES, ops=_multibox):
    """Training Symbol of ``config`` (see ``get_symbol_train``).

    ``ops`` is the namespace of the three MultiBox functions, ``multibox.symbol`` by default;
    the parity test and the benchmark pass ``mx.sym.contrib`` to build the identical graph on
    the native operators.

    Targets are ``MultiBoxTarget``'s (ratio 3 mining, native CPU semantics), with two changes
    made around the op, which itself stays native:

    * Images without objects: the op ignores every anchor of such an image, so it would add
      nothing to the loss. Here its ``minimum_negative_samples`` hardest anchors (lowest
      background probability, ties to the lowest index; every anchor is a candidate, its IoU
      being 0) get class target 0 and the rest stay ignored, as GluonCV's ``SSDMultiBoxLoss``
      does with ``min_hard_negatives`` on the all-negative targets of its target generator
      (the native GPU op, unlike CPU, also uses ``minimum_negative_samples``). A count, not
      all anchors: the "valid" normalisation would otherwise let one empty image (thousands of
      anchors) outweigh the labelled anchors of the images with objects (about 43 each on the
      synthetic set). ``0``: ignored, as natively. Images with objects keep the op's targets
      exactly; only the normalisation's count of labelled anchors grows.
    * The op reads ``cls_pred`` with non-finite logits replaced by 0: it refuses to mine on NaN
      probabilities, and a diverged network must give a NaN loss, not a graph error.

    Every input of ``MultiBoxTarget`` and ``MultiBoxDetection`` and every target output is
    wrapped in ``BlockGrad``: no gradient flows through target generation or decoding.
    """
    loc_preds, cls_preds, anchors = _multibox_layers(config, num_classes, data_shape, ops)
    label = mx.sym.var('label')
    logits = mx.sym.BlockGrad(cls_preds)
    logits = mx.sym.where(logits - logits == 0, logits, mx.sym.zeros_like(logits))  # finite
    target = ops.MultiBoxTarget(
        mx.sym.BlockGrad(anchors), label, logits,
        overlap_threshold=0.5, ignore_label=_IGNORE, negative_mining_ratio=3,
        negative_mining_thresh=0.5, minimum_negative_samples=minimum_negative_samples,
        variances=VARIANCES, name='multibox_target')
    cls_target = _empty_image_negatives(target[2], logits, label, minimum_negative_samples)
    loc_target, loc_mask, cls_target = (
        mx.sym.BlockGrad(t, name=f"multibox_target_{n}_blocked")
        for t, n in zip((target[0], target[1], cls_target), ('loc', 'mask', 'cls')))
    cls_prob = mx.sym.SoftmaxOutput(cls_preds, cls_target, ignore_label=_IGNORE, use_ignore=True,
                                    multi_output=True, normalization='valid', name='cls_prob')
    loc_diff = mx.sym.smooth_l1(loc_mask * (loc_preds - loc_target), scalar=1.0,
                                name='loc_loss_')
    loc_loss = mx.sym.MakeLoss(loc_diff, normalization='valid', name='loc_loss')
    cls_label = mx.sym.MakeLoss(cls_target, grad_scale=0, name='cls_label')
    det = ops.MultiBoxDetection(
        mx.sym.BlockGrad(cls_prob), mx.sym.BlockGrad(loc_preds), mx.sym.BlockGrad(anchors),
        nms_threshold=nms_thresh, force_suppress=force_suppress, variances=VARIANCES,
        nms_topk=nms_topk, name='detection')
    det = mx.sym.MakeLoss(det, grad_scale=0, name='det_out')
    return mx.sym.Group([cls_prob, loc_loss, cls_label, det])


def _empty_image_negatives(cls_target, logits, label, count):
    """``cls_target (B, N)`` where each image without valid gts (no row before its first
    class -1 row) gets class 0 at its ``count`` hardest anchors, ``-1`` elsewhere.

    ``logits (B, C, N)`` finite, ``label (B, M, 5+)``. The hardest anchors are those of the
    native mining order (``multibox.mining``): ascending background probability, then index.
    """
    if count <= 0:
        return cls_target
    F = mx.sym
    valid, _ = matcher.valid_gts(F, F.reshape(F.slice_axis(label, axis=2, begin=0, end=1), (0, 0)))
    empty = F.sum(valid, axis=1, keepdims=True) == 0  # (B, 1)
    prob = mining.background_prob(F, logits)  # (B, N)
    every_anchor = F.ones_like(prob)
    num_anchors = mining.count(F, every_anchor)  # (B,)
    negative, _ = mining.hard_negatives(F, prob, every_anchor, F.minimum(num_anchors, count))
    mined = F.where(negative, F.zeros_like(prob), F.ones_like(prob) * _IGNORE)
    return F.where(F.broadcast_like(empty, prob), mined, cls_target)


def inference_graph(config, num_classes, data_shape, nms_thresh=NMS_THRESH, force_suppress=False,
                    nms_topk=NMS_TOPK, ops=_multibox):
    """Inference Symbol of ``config``: channel softmax then ``MultiBoxDetection`` (B, N, 6);
    ``ops`` as in ``training_graph``."""
    loc_preds, cls_preds, anchors = _multibox_layers(config, num_classes, data_shape, ops)
    cls_prob = mx.sym.softmax(cls_preds, axis=1, name='cls_prob')
    return ops.MultiBoxDetection(cls_prob, loc_preds, anchors, nms_threshold=nms_thresh,
                                 force_suppress=force_suppress, variances=VARIANCES,
                                 nms_topk=nms_topk, name='detection')


def feature_names(config):
    """Names of the output layers of ``config``, used as prefixes of their predictors."""
    return [layer or f"multi_feat_{k}_conv_3x3_relu"
            for k, layer in enumerate(config.from_layers)]


def layer_anchors(config, data_shape, ops=_multibox):
    """Anchors of every output layer at ``data_shape`` (int or (H, W)), computed by the graph.

    Returns a list of numpy arrays (H_k, W_k, A_k, 4), corner format, normalised to [0, 1].
    """
    height, width = (data_shape, data_shape) if isinstance(data_shape, int) else data_shape
    layers = _layer_outputs(config, 1, data_shape, ops)
    priors = mx.sym.Group([prior for _, _, prior in layers])
    executor = priors.simple_bind(mx.cpu(), data=(1, 3, height, width), grad_req='null')
    for array in executor.arg_arrays + executor.aux_arrays:
        array[:] = 0  # anchors depend on shapes only; zeros keep every value finite
    grids = []
    for (loc, _, _), prior in zip(layers, executor.forward()):
        _, [(_, _, rows, cols)], _ = loc.infer_shape(data=(1, 3, height, width))
        grids.append(prior.asnumpy().reshape(rows, cols, -1, 4))
    return grids


def _multibox_layers(config, num_classes, data_shape, ops):
    """Predictions and anchors of every output layer, concatenated.

    Returns loc_preds (B, 4N), cls_preds (B, C+1, N), anchors (1, N, 4) corner, normalised.
    """
    layers = _layer_outputs(config, num_classes, data_shape, ops)
    loc = [mx.sym.flatten(mx.sym.transpose(l, axes=(0, 2, 3, 1))) for l, _, _ in layers]
    cls = [mx.sym.flatten(mx.sym.transpose(c, axes=(0, 2, 3, 1))) for _, c, _ in layers]
    anchors = [mx.sym.flatten(prior) for _, _, prior in layers]  # (1, HWA, 4) -> (1, 4HWA)
    loc_preds = mx.sym.concat(*loc, dim=1, name='multibox_loc_pred')  # (B, HWA*4) per layer
    cls_preds = mx.sym.reshape(mx.sym.concat(*cls, dim=1), shape=(0, -1, num_classes + 1))
    cls_preds = mx.sym.transpose(cls_preds, axes=(0, 2, 1), name='multibox_cls_pred')
    anchors = mx.sym.reshape(mx.sym.concat(*anchors, dim=1), shape=(0, -1, 4),
                             name='multibox_anchors')
    return loc_preds, cls_preds, anchors


def _layer_outputs(config, num_classes, data_shape, ops):
    """Per output layer: box predictor (B, 4A, H, W), class predictor (B, A(C+1), H, W) and
    ``MultiBoxPrior`` anchors (1, HWA, 4)."""
    features = _features(config, mx.sym.var('data'))
    steps = config.prior_steps(data_shape)
    outputs = []
    for k, (name, x) in enumerate(zip(feature_names(config), features)):
        if config.normalizations[k] > 0:
            x = _scaled_l2_norm(x, name, config.num_filters[k], config.normalizations[k])
        num_anchors = config.num_anchors[k]
        loc = _predictor(x, f"{name}_loc_pred_conv", num_anchors * 4)
        cls = _predictor(x, f"{name}_cls_pred_conv", num_anchors * (num_classes + 1))
        prior = ops.MultiBoxPrior(x, sizes=config.sizes[k], ratios=config.ratios[k],
                                  clip=False, steps=(steps[k], steps[k]), name=f"{name}_anchors")
        outputs.append((loc, cls, prior))
    return outputs


def _features(config, data):
    """Body layers and extra layers of ``config``, in ``from_layers`` order."""
    body = config.body(data)
    features = []
    for k, layer in enumerate(config.from_layers):
        if layer:
            if layer not in body:
                raise ValueError(f"from_layers names {layer!r}, which the body does not have; "
                                 f"its layers: {', '.join(body)}")
            features.append(body[layer])
        else:
            features.append(_extra_layer(features[-1], k, config.num_filters[k], config.kernels[k],
                                         config.strides[k], config.pads[k], config.extra_batchnorm))
    return features


def _extra_layer(x, k, filters, kernel, stride, pad, batchnorm):
    """mxnet-ssd's extra layer: 1x1 conv (max(128, filters // 2)) + ReLU, then
    ``kernel`` x ``kernel`` conv (``filters``, ``stride``, ``pad``) + ReLU; with ``batchnorm``
    each convolution is followed by a BatchNorm (as GluonCV's ``FeatureExpander``)."""
    x = _conv_relu(x, f"multi_feat_{k}_conv_1x1", max(128, filters // 2), 1, 1, 0, batchnorm)
    return _conv_relu(x, f"multi_feat_{k}_conv_3x3", filters, kernel, stride, pad, batchnorm)


def _conv_relu(x, name, filters, kernel, stride, pad, batchnorm=False):
    """Convolution ``{name}_conv`` (bias learning rate x2, as mxnet-ssd) + ReLU ``{name}_relu``;
    with ``batchnorm``, the convolution has no bias and BatchNorm ``{name}_bn`` comes before the ReLU."""
    options = dict(num_filter=filters, kernel=(kernel, kernel), stride=(stride, stride), pad=(pad, pad),
                   name=f"{name}_conv")
    if batchnorm:
        x = mx.sym.Convolution(x, no_bias=True, **options)
        x = mx.sym.BatchNorm(x, name=f"{name}_bn")
    else:
        bias = mx.sym.var(f"{name}_conv_bias", init=mx.init.Constant(0.0), lr_mult=2.0)
        x = mx.sym.Convolution(x, bias=bias, **options)
    return mx.sym.Activation(x, act_type='relu', name=f"{name}_relu")


def _predictor(x, name, channels):
    """3x3 predictor convolution (bias learning rate x2), (B, C_in, H, W) -> (B, channels, H, W)."""
    bias = mx.sym.var(f"{name}_bias", init=mx.init.Constant(0.0), lr_mult=2.0)
    return mx.sym.Convolution(x, bias=bias, num_filter=channels, kernel=(3, 3), pad=(1, 1),
                              name=name)


def _scaled_l2_norm(x, name, channels, initial):
    """L2 normalisation over channels times a learnable per-channel scale ``{name}_scale``
    (1, C, 1, 1), initialised to ``initial``, weight decay x0.1 (as mxnet-ssd)."""
    scale = mx.sym.var(f"{name}_scale", shape=(1, channels, 1, 1),
                       init=mx.init.Constant(initial), wd_mult=0.1)
    x = mx.sym.L2Normalization(x, mode='channel', eps=1e-5, name=f"{name}_norm")
    return mx.sym.broadcast_mul(scale, x)
