"""multibox.npx and the blocks in numpy mode (``npx.set_np()``) against MXNet 1.9.1's ``mx.npx``.

The model is the TinySSD of Dive into Deep Learning's SSD chapter (MXNet edition), shrunk: a
few down-sampling stages, ``multibox_prior`` on every feature map, ``multibox_target`` on the
transposed class predictions, ``multibox_detection`` on the softmax. It runs with the native
``mx.npx`` ops and with ours (functions, or the blocks as children), imperatively and hybridized.

Numpy mode is global state: every test that needs it takes the ``numpy_mode`` fixture, which
restores the previous mode afterwards.
"""
import contextlib
import inspect

import mxnet as mx
import numpy as onp
import pytest
from mxnet import autograd, gluon, npx
from mxnet.gluon import nn

import multibox
from conftest import assert_same

pytestmark = pytest.mark.parity

# d2l's five feature maps: the base network (three down-sampling blocks), three more
# down-sampling blocks, a global max pooling; d2l's anchor sizes and ratios
SIZES = [[0.2, 0.272], [0.37, 0.447], [0.54, 0.619], [0.71, 0.79], [0.88, 0.961]]
RATIOS = [[1, 2, 0.5]] * 5
NUM_ANCHORS = len(SIZES[0]) + len(RATIOS[0]) - 1
NUM_CLASSES = 1  # d2l's banana detector; with 1 class MXNet sums the gradients where the tests see it
TARGET = {'negative_mining_ratio': 3}
DETECTION = {'nms_threshold': 0.45}


@contextlib.contextmanager
def numpy_semantics():
    """``npx.set_np()`` inside; the previous shape and array modes come back afterwards."""
    shape, array = mx.util.is_np_shape(), mx.util.is_np_array()
    npx.set_np()
    try:
        yield
    finally:
        npx.set_np(shape=shape, array=array)


@pytest.fixture
def numpy_mode():
    with numpy_semantics():
        yield


def _down_sample(channels):
    block = nn.HybridSequential()
    for _ in range(2):
        block.add(nn.Conv2D(channels, 3, padding=1), nn.BatchNorm(in_channels=channels),
                  nn.Activation('relu'))
    block.add(nn.MaxPool2D(2))
    return block


def _stage(i):
    if i == 0:
        base = nn.HybridSequential()
        base.add(*(_down_sample(channels) for channels in (16, 32, 64)))
        return base
    return nn.GlobalMaxPool2D() if i == 4 else _down_sample(128)


class TinySSD(nn.HybridBlock):
    """d2l's TinySSD (as a HybridBlock); ``ops``: 'native' (``F.npx``), 'functions'
    (``multibox.npx``) or 'blocks' (``multibox.MultiBoxPrior`` children)."""

    def __init__(self, ops, **kwargs):
        super().__init__(**kwargs)
        self.ops = ops
        with self.name_scope():
            self.stages, self.cls, self.bbox = (nn.HybridSequential() for _ in range(3))
            for i in range(len(SIZES)):
                self.stages.add(_stage(i))
                self.cls.add(nn.Conv2D(NUM_ANCHORS * (NUM_CLASSES + 1), 3, padding=1))
                self.bbox.add(nn.Conv2D(NUM_ANCHORS * 4, 3, padding=1))
            self.priors = nn.HybridSequential()
            if ops == 'blocks':
                for sizes, ratios in zip(SIZES, RATIOS):
                    self.priors.add(multibox.MultiBoxPrior(sizes=sizes, ratios=ratios))

    def prior(self, F, i, feature_map):
        if self.ops == 'native':
            return F.npx.multibox_prior(feature_map, sizes=SIZES[i], ratios=RATIOS[i])
        if self.ops == 'functions':
            return multibox.npx.multibox_prior(feature_map, sizes=SIZES[i], ratios=RATIOS[i])
        return self.priors[i](feature_map)

    def hybrid_forward(self, F, x):
        anchors, cls_preds, bbox_preds = [], [], []
        for i in range(len(SIZES)):
            x = self.stages[i](x)
            anchors.append(self.prior(F, i, x))
            cls_preds.append(F.npx.batch_flatten(F.np.transpose(self.cls[i](x), (0, 2, 3, 1))))
            bbox_preds.append(F.npx.batch_flatten(F.np.transpose(self.bbox[i](x), (0, 2, 3, 1))))
        cls_preds = F.npx.reshape(F.np.concatenate(cls_preds, axis=1), (-2, -1, NUM_CLASSES + 1))
        return F.np.concatenate(anchors, axis=1), cls_preds, F.np.concatenate(bbox_preds, axis=1)


class Head(nn.HybridBlock):
    """Targets and detections of TinySSD's outputs inside one numpy-mode HybridBlock."""

    def __init__(self, ops, **kwargs):
        super().__init__(**kwargs)
        self.ops = ops
        if ops == 'blocks':
            self.target = multibox.MultiBoxTarget(**TARGET)
            self.detection = multibox.MultiBoxDetection(**DETECTION)

    def hybrid_forward(self, F, anchors, label, cls_preds, bbox_preds):
        transposed = F.np.transpose(cls_preds, (0, 2, 1))
        cls_probs = F.np.transpose(F.npx.softmax(cls_preds), (0, 2, 1))
        if self.ops == 'blocks':
            targets = self.target(anchors, label, transposed)
            return tuple(targets) + (self.detection(cls_probs, bbox_preds, anchors),)
        ops = F.npx if self.ops == 'native' else multibox.npx
        targets = ops.multibox_target(anchors, label, transposed, **TARGET)
        return tuple(targets) + (ops.multibox_detection(cls_probs, bbox_preds, anchors, **DETECTION),)


def _images_and_labels():
    rng = onp.random.RandomState(0)
    images = mx.np.array(rng.uniform(size=(2, 3, 64, 64)).astype('float32'))
    labels = mx.np.array(onp.array([[[0, .1, .1, .5, .6], [0, .4, .3, .9, .8]],
                                    [[0, .2, .5, .7, .95], [-1] * 5]], dtype='float32'))
    return images, labels


def _train_step(ops, hybridize, detach_native_prior=False):
    """One d2l training step: anchors, targets, per-image loss, detections and the gradients."""
    images, labels = _images_and_labels()
    mx.random.seed(1)
    net = TinySSD(ops, prefix='tinyssd_')
    net.initialize(mx.init.Xavier())
    if hybridize:
        net.hybridize()
    if detach_native_prior:  # the native prior then stays out of autograd, as ours does
        net.prior = lambda F, i, x: F.npx.multibox_prior(x.detach(), sizes=SIZES[i], ratios=RATIOS[i])
    functions = mx.npx if ops == 'native' else multibox.npx
    with autograd.record():
        anchors, cls_preds, bbox_preds = net(images)
        loc_target, loc_mask, cls_target = functions.multibox_target(
            anchors, labels, cls_preds.transpose(0, 2, 1), **TARGET)
        loss = (gluon.loss.SoftmaxCrossEntropyLoss()(cls_preds, cls_target)
                + gluon.loss.L1Loss()(bbox_preds * loc_mask, loc_target * loc_mask))
    loss.backward()
    cls_probs = npx.softmax(cls_preds).transpose(0, 2, 1)
    detections = functions.multibox_detection(cls_probs, bbox_preds, anchors, **DETECTION)
    outputs = [anchors, loc_target, loc_mask, cls_target, loss, detections]
    assert all(isinstance(out, mx.np.ndarray) for out in outputs)
    grads = [p.grad().asnumpy() for p in net.collect_params().values() if p.grad_req != 'null']
    return [out.asnumpy() for out in outputs], grads


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybridized'])
@pytest.mark.parametrize('ops', ['functions', 'blocks'])
def test_tiny_ssd_step_same_as_npx(numpy_mode, ops, hybridize):
    native, native_grads = _train_step('native', hybridize)
    ours, our_grads = _train_step(ops, hybridize)
    assert (native[3] > 0).sum() >= 2 and (native[5][:, :, 0] >= 0).any()  # matches, detections
    assert_same(ours, native)  # anchors, targets, losses, detections: bit for bit
    # Gradients: the native prior adds a zero into its feature map's gradient sum, which MXNet
    # then sums in another order (last bits; the conv biases before a BatchNorm have gradients
    # that are rounding noise, so the bound is relative to the model's largest gradient).
    largest = max(float(abs(grad).max()) for grad in native_grads)
    assert_same(our_grads, native_grads, atol=1e-5 * largest)


def test_gradients_are_the_native_ones_with_the_prior_cut(numpy_mode):
    """The only gradient difference: the native prior takes part in autograd (with a zero
    gradient into its feature map, which changes the order of the float32 sum there)."""
    _, native_grads = _train_step('native', hybridize=False, detach_native_prior=True)
    _, our_grads = _train_step('functions', hybridize=False)
    assert_same(our_grads, native_grads)


@pytest.mark.parametrize('hybridize', [False, True], ids=['imperative', 'hybridized'])
@pytest.mark.parametrize('ops', ['functions', 'blocks'])
def test_target_and_detection_inside_a_numpy_hybrid_block(numpy_mode, ops, hybridize):
    images, labels = _images_and_labels()
    rng = onp.random.RandomState(4)
    net = TinySSD('native')
    net.initialize()
    anchors = net(images)[0]
    num_anchors = anchors.shape[1]
    cls_preds = mx.np.array(rng.normal(size=(2, num_anchors, NUM_CLASSES + 1)).astype('float32'))
    bbox_preds = mx.np.array(rng.normal(size=(2, 4 * num_anchors)).astype('float32'))
    results = []
    for kind in ('native', ops):
        head = Head(kind)
        head.initialize()
        if hybridize:
            head.hybridize()
        results.append([out.asnumpy() for out in head(anchors, labels, cls_preds, bbox_preds)])
    assert (results[0][2] > 0).sum() >= 2
    assert_same(results[1], results[0])


def test_functions_take_and_give_numpy_arrays(numpy_mode):
    data = mx.np.zeros((1, 8, 4, 4))
    anchors = multibox.npx.multibox_prior(data, sizes=(0.3, 0.5), ratios=(1, 2))
    assert isinstance(anchors, mx.np.ndarray)
    assert_same(anchors.asnumpy(), npx.multibox_prior(data, sizes=(0.3, 0.5), ratios=(1, 2)).asnumpy())
    label = mx.np.array([[[1, .1, .1, .4, .4], [-1, -1, -1, -1, -1]]])
    cls_pred = mx.np.array(onp.random.RandomState(2).normal(size=(1, 3, anchors.shape[1])), dtype='float32')
    ours = multibox.npx.multibox_target(anchors, label, cls_pred)
    assert isinstance(ours, list) and len(ours) == 3
    assert all(isinstance(out, mx.np.ndarray) for out in ours)
    assert_same([o.asnumpy() for o in ours],
                [n.asnumpy() for n in npx.multibox_target(anchors, label, cls_pred)])
    out = mx.np.zeros((1, anchors.shape[1], 6))
    result = multibox.npx.multibox_detection(npx.softmax(cls_pred, axis=1), mx.np.zeros((1, 4 * anchors.shape[1])),
                                             anchors, out=out)
    assert result is out
    assert_same(out.asnumpy(), npx.multibox_detection(npx.softmax(cls_pred, axis=1),
                                                      mx.np.zeros((1, 4 * anchors.shape[1])), anchors).asnumpy())


def test_functions_work_with_numpy_arrays_outside_numpy_mode():
    assert not mx.util.is_np_array()
    data = mx.np.zeros((1, 1, 3, 5))
    anchors = multibox.npx.multibox_prior(data, sizes=(0.4,), ratios=(1, 3))
    assert isinstance(anchors, mx.np.ndarray)
    assert_same(anchors.asnumpy(), mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 1, 3, 5)), sizes=(0.4,),
                                                               ratios=(1, 3)).asnumpy())


def test_legacy_ndarrays_and_symbols_while_numpy_mode_is_on(numpy_mode):
    rng = onp.random.RandomState(6)
    data = mx.nd.zeros((1, 1, 4, 4))
    anchors = multibox.ndarray.MultiBoxPrior(data, sizes=(0.3, 0.5), ratios=(1, 2))
    native_anchors = mx.nd.contrib.MultiBoxPrior(data, sizes=(0.3, 0.5), ratios=(1, 2))
    assert type(anchors) is type(native_anchors) is mx.nd.NDArray
    assert_same(anchors.asnumpy(), native_anchors.asnumpy())
    label = mx.nd.array([[[1, .1, .1, .4, .4], [-1, -1, -1, -1, -1]]])
    cls_pred = mx.nd.array(rng.normal(size=(1, 3, anchors.shape[1])))
    ours = multibox.ndarray.MultiBoxTarget(anchors, label, cls_pred, negative_mining_ratio=3)
    native = mx.nd.contrib.MultiBoxTarget(anchors, label, cls_pred, negative_mining_ratio=3)
    assert all(type(out) is mx.nd.NDArray for out in ours)
    assert_same([o.asnumpy() for o in ours], [n.asnumpy() for n in native])
    cls_prob = mx.nd.softmax(cls_pred, axis=1)
    loc_pred = mx.nd.array(rng.normal(size=(1, 4 * anchors.shape[1])))
    assert_same(multibox.ndarray.MultiBoxDetection(cls_prob, loc_pred, anchors).asnumpy(),
                mx.nd.contrib.MultiBoxDetection(cls_prob, loc_pred, anchors).asnumpy())
    symbol = multibox.symbol.MultiBoxPrior(mx.sym.var('data'), sizes=(0.3, 0.5), ratios=(1, 2), name='p')
    assert symbol.list_outputs() == ['p_output']
    assert_same(symbol.eval(data=data)[0].asnumpy(), native_anchors.asnumpy())


@pytest.mark.parametrize('shape, array', [(False, False), (True, False), (True, True)])
def test_numpy_mode_is_restored_after_a_test(shape, array):
    npx.set_np(shape=shape, array=array)
    try:
        with pytest.raises(RuntimeError):
            with numpy_semantics():
                assert mx.util.is_np_array() and mx.util.is_np_shape()
                raise RuntimeError  # a failing test restores the mode too
        assert (mx.util.is_np_shape(), mx.util.is_np_array()) == (shape, array)
    finally:
        npx.reset_np()


@pytest.mark.parametrize('name', ['multibox_prior', 'multibox_target', 'multibox_detection'])
def test_signatures_are_those_of_npx(name):
    native = [p for p in inspect.signature(getattr(mx.npx, name)).parameters if p != 'kwargs']
    assert list(inspect.signature(getattr(multibox.npx, name)).parameters) == native


def test_wrong_kind_of_array_is_named(numpy_mode):
    with pytest.raises(TypeError, match=r'multibox_prior: data must be an mx.np.ndarray \(or a numpy '
                                        r'Symbol\), got NDArray \(use multibox.ndarray'):
        multibox.npx.multibox_prior(mx.nd.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r'MultiBoxPrior: data must be an NDArray, got mx.np.ndarray '
                                        r'\(use multibox.npx'):
        multibox.ndarray.MultiBoxPrior(mx.np.zeros((1, 1, 2, 2)))
    with pytest.raises(TypeError, match=r'MultiBoxPrior: data must be a Symbol, got numpy Symbol '
                                        r'\(use multibox.ndarray for NDArrays, multibox.npx'):
        multibox.symbol.MultiBoxPrior(mx.sym.var('data').as_np_ndarray())
