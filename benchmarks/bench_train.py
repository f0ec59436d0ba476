"""Training-step speed of SSD300 on CPU: our ops vs the native contrib ops vs GluonCV.

Prints the median time of one forward+backward at the same batch for:

1. the SSD300 (vgg16_reduced, 20 classes) training graph of ``symbols`` on ``multibox`` ops;
2. the identical graph built on ``mx.sym.contrib`` MultiBox ops (target: 1. <= 1.05x this);
3. GluonCV's ``ssd_300_vgg16_atrous_voc`` (random weights, hybridized with static memory, as
   its train_ssd.py) including its target generation (``SSDTargetGenerator`` per image, as
   ``SSDDefaultTrainTransform`` does in the data workers) and ``SSDMultiBoxLoss`` (target:
   1. <= 1.0x this).

No optimizer update and no data loading in any of them; ``benchmarks/bench_pipeline.py`` times
the full training iteration (loading, augmentation, forward, backward, update) against GluonCV's
train_ssd.py loop. Example::

    python benchmarks/bench_train.py --batch-size 4 --repeat 5
"""
import argparse
import statistics
import time

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon
from gluoncv.loss import SSDMultiBoxLoss
from gluoncv.model_zoo import get_model
from gluoncv.model_zoo.ssd.target import SSDTargetGenerator

from symbols import get_config
from symbols.ssd import training_graph

SHAPE, NUM_CLASSES = 300, 20


def _INITIALIZER():
    return mx.init.Xavier(rnd_type='gaussian', factor_type='out', magnitude=2)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--repeat', type=int, default=5, help='timed steps (after 1 warm-up)')
    parser.add_argument('--boxes', type=int, default=4, help='objects per image')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--runner', choices=('module', 'symbolblock'), default='module',
                        help='how the two symbol graphs run (GluonCV always runs hybridized)')
    return parser.parse_args(argv)


def make_batch(batch_size, boxes, seed):
    """Random images (B, 3, 300, 300) and labels (B, boxes, 5) ``[cls, x0, y0, x1, y1]`` in [0, 1]."""
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, (batch_size, 3, SHAPE, SHAPE)).astype('float32')
    corner = rng.uniform(0, 0.6, (batch_size, boxes, 2))
    size = rng.uniform(0.1, 0.4, (batch_size, boxes, 2))
    classes = rng.randint(0, NUM_CLASSES, (batch_size, boxes, 1))
    labels = np.concatenate([classes, corner, corner + size], axis=-1).astype('float32')
    return images, labels


def timed(steps, repeat):
    """Median seconds of each step function; one warm-up each, then rounds that run every step
    once in turn (so a change of machine load hits all of them alike)."""
    for step in steps:
        step()
    times = [[] for _ in steps]
    for _ in range(repeat):
        for step, record in zip(steps, times):
            start = time.perf_counter()
            step()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def symbol_step(ops, images, labels, runner):
    """forward+backward of our training graph; ``ops`` None means multibox.

    ``runner`` 'module': ``mx.mod.Module`` (mxnet-ssd's way); 'symbolblock': the same Symbol in
    a hybridized ``gluon.SymbolBlock`` (CachedOp) under ``autograd``.
    """
    kwargs = {} if ops is None else {'ops': ops}
    sym = training_graph(get_config('vgg16_reduced', SHAPE), NUM_CLASSES, SHAPE, **kwargs)
    data, label = mx.nd.array(images), mx.nd.array(labels)
    mx.random.seed(1)
    if runner == 'module':
        module = mx.mod.Module(sym, data_names=['data'], label_names=['label'], context=mx.cpu())
        module.bind([('data', images.shape)], [('label', labels.shape)])
        module.init_params(_INITIALIZER())
        batch = mx.io.DataBatch([data], [label])

        def step():
            module.forward_backward(batch)
            mx.nd.waitall()
        return step
    block = gluon.SymbolBlock(sym, [mx.sym.var('data'), mx.sym.var('label')])
    # parameter shapes from the symbol's own inference, then Module's initialisation
    arg_shapes, _, aux_shapes = sym.infer_shape_partial(data=images.shape, label=labels.shape)
    known = dict(zip(sym.list_arguments() + sym.list_auxiliary_states(), arg_shapes + aux_shapes))
    for name, param in block.collect_params().items():
        param.shape = known[name]
    block.initialize(mx.init.Zero())
    initializer, attrs = _INITIALIZER(), sym.attr_dict()
    for name, param in block.collect_params().items():  # as Module.init_params does
        value = mx.nd.zeros(param.shape)
        initializer(mx.init.InitDesc(name, attrs.get(name, {})), value)
        param.set_data(value)
    block.hybridize()

    def step():
        with autograd.record():
            outputs = block(data, label)
        autograd.backward(outputs)
        mx.nd.waitall()
    return step


def gluoncv_step(images, labels):
    """GluonCV training step: per-image targets, hybridized forward, SSDMultiBoxLoss, backward."""
    net = get_model('ssd_300_vgg16_atrous_voc', pretrained=False, pretrained_base=False)
    net.initialize()
    with autograd.train_mode():
        _, _, anchors = net(mx.nd.zeros((1, 3, SHAPE, SHAPE)))  # (1, N, 4) centre, pixels
    net.hybridize(static_alloc=True, static_shape=True)
    generator = SSDTargetGenerator(iou_thresh=0.5, stds=(0.1, 0.1, 0.2, 0.2),
                                   negative_mining_ratio=-1)
    loss = SSDMultiBoxLoss()
    data = mx.nd.array(images)

    def step():
        cls_targets, box_targets = [], []
        for label in labels:  # one image at a time, as the data-loader transform does
            boxes = mx.nd.array(label[np.newaxis, :, 1:] * SHAPE)
            ids = mx.nd.array(label[np.newaxis, :, :1])
            cls_target, box_target, _ = generator(anchors, None, boxes, ids)
            cls_targets.append(cls_target[0])
            box_targets.append(box_target[0])
        cls_targets, box_targets = mx.nd.stack(*cls_targets), mx.nd.stack(*box_targets)
        with autograd.record():
            cls_preds, box_preds, _ = net(data)
            sum_loss, _, _ = loss([cls_preds], [box_preds], [cls_targets], [box_targets])
        autograd.backward(sum_loss)
        mx.nd.waitall()
    return step


def main(argv=None):
    args = parse_args(argv)
    images, labels = make_batch(args.batch_size, args.boxes, args.seed)
    print(f"SSD300 vgg16_reduced, {NUM_CLASSES} classes, batch {args.batch_size}, CPU, median of "
          f"{args.repeat} interleaved forward+backward steps, symbol graphs run by {args.runner}")
    ours, native, gluoncv = timed([symbol_step(None, images, labels, args.runner),
                                   symbol_step(mx.sym.contrib, images, labels, args.runner),
                                   gluoncv_step(images, labels)], args.repeat)
    print(f"multibox ops (symbols):        {ours * 1000:8.1f} ms")
    print(f"native contrib ops (same graph): {native * 1000:6.1f} ms  "
          f"ratio ours/native {ours / native:.3f} (target <= 1.05)")
    print(f"GluonCV incl. target generation: {gluoncv * 1000:6.1f} ms  "
          f"ratio ours/GluonCV {ours / gluoncv:.3f} (target <= 1.0)")


if __name__ == '__main__':
    main()
