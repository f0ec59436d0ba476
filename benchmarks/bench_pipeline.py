"""Full training-iteration speed of SSD300 on CPU: train.py's loop vs GluonCV's train_ssd.py loop.

One iteration is everything a training epoch does per batch: JPEG decoding and augmentation in
the DataLoader workers, forward, backward, optimizer update, and reading the losses back. Both
sides read the same synthetic VOC-layout images (``ssd.synthetic``, 4 classes) with the same
batch size and number of worker processes:

- ours: exactly train.py (``train.make_loader``: ``DetectionDataset`` + ``EpochSampler`` in a
  process-pool DataLoader; ``train.build_module``: the vgg16_reduced 300 training Module with
  MultiBoxTarget in the graph, SGD; per batch ``forward_backward``, ``train.batch_losses``,
  ``update``);
- GluonCV: its scripts/detection/ssd/train_ssd.py loop (``VOCDetection`` over the same folder,
  ``SSDDefaultTrainTransform`` computing the targets in the workers from the anchors of a
  train-mode forward, ``Tuple(Stack(), Stack(), Stack())``, ``ssd_300_vgg16_atrous_custom``
  hybridized with ``static_alloc=True, static_shape=True``, ``SSDMultiBoxLoss``, SGD
  ``Trainer.step(1)``, the two ``mx.metric.Loss`` updates). Random weights, no download.

A round is one epoch of each side (the training set holds ``--iterations`` batches, so an epoch
drains its loader and leaves no prefetched work behind), in alternating order; the first round
is warm-up. Printed: images/s per side, the median per-round ratio ours / GluonCV (higher is
better; target >= 1.0), and where the CPU went: seconds of the main process (network, update,
and for ours the target generation) and of the loader workers (decoding, augmentation, and for
GluonCV the target generation) per image, plus the time the loop sat waiting for a batch.

    python benchmarks/bench_pipeline.py          # --batch-size 8 --num-workers 2 --iterations 2 --rounds 3
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import mxnet as mx
from mxnet import autograd, gluon
from gluoncv.data import VOCDetection
from gluoncv.data.batchify import Stack, Tuple
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
from gluoncv.loss import SSDMultiBoxLoss
from gluoncv.model_zoo import get_model

# train.py is a script at the repository root, not part of an installed package
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import train  # noqa: E402
from ssd import synthetic  # noqa: E402
from ssd.dataset import label_width  # noqa: E402
from ssd.inference import contexts  # noqa: E402

SHAPE = 300


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--num-workers', type=int, default=2)
    parser.add_argument('--iterations', type=int, default=2, help='iterations per round (one epoch)')
    parser.add_argument('--rounds', type=int, default=3, help='rounds of both sides; the first is warm-up')
    parser.add_argument('--seed', type=int, default=0)
    return parser.parse_args(argv)


def make_dataset(root, num_train, num_test, seed):
    """The synthetic set with ``num_train`` training images that all hold objects.

    GluonCV's ``SSDDefaultTrainTransform`` fails on an image without objects (Pascal VOC has
    none), while ``ssd.synthetic`` leaves about 5% of its images empty: both sides train on the
    first ``num_train`` non-empty images instead.
    """
    synthetic.generate(root, 2 * num_train + 8, num_test, seed)
    listing = os.path.join(root, 'VOC2007', 'ImageSets', 'Main', 'trainval.txt')
    with open(listing) as f:
        kept = [name for name in f.read().split() if _has_objects(root, name)][:num_train]
    with open(listing, 'w') as f:
        f.write('\n'.join(kept) + '\n')


def _has_objects(root, name):
    with open(os.path.join(root, 'VOC2007', 'Annotations', name + '.xml')) as f:
        return '<object>' in f.read()


def ours(root, args):
    """train.py's training loader and Module; returns ``(loader, step)``."""
    options = train.parse_args(['--dataset', 'synthetic', '--data-root', root, '--network', 'vgg16_reduced',
                                '--data-shape', str(SHAPE), '--batch-size', str(args.batch_size),
                                '--num-workers', str(args.num_workers), '--seed', str(args.seed),
                                '--max-expand', '4'])  # GluonCV's zoom-out, as on the other side
    mx.random.seed(args.seed)
    train_split, val_split = train.open_splits(options)
    width = label_width(train_split.source, val_split.source)
    kv = mx.kv.create(options.kv_store)
    loader = train.make_loader(train_split.source, options, width, train=True, kv=kv)
    module = train.build_module(options, len(train_split.class_names), width, contexts('', 1), kv, 0, len(loader))

    def step(batch):  # the body of train.run_epoch, without its logging
        data, label, meta = batch
        module.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
        train.batch_losses(module.get_outputs())
        module.update()
        meta[:, 3].asnumpy()  # train.py collects the indices of unreadable images
    return loader, step


class SyntheticVOC(VOCDetection):
    CLASSES = synthetic.CLASSES


def gluoncv(root, args):
    """GluonCV train_ssd.py's network, training loader and loop body; returns ``(loader, step)``."""
    net = get_model('ssd_300_vgg16_atrous_custom', classes=synthetic.CLASSES, pretrained_base=False)
    net.initialize()
    with autograd.train_mode():  # fixed anchors for the target generation in the workers
        _, _, anchors = net(mx.nd.zeros((1, 3, SHAPE, SHAPE)))
    dataset = SyntheticVOC(root, splits=((2007, 'trainval'),))
    loader = gluon.data.DataLoader(dataset.transform(SSDDefaultTrainTransform(SHAPE, SHAPE, anchors)),
                                   args.batch_size, True, batchify_fn=Tuple(Stack(), Stack(), Stack()),
                                   last_batch='rollover', num_workers=args.num_workers)
    net.hybridize(static_alloc=True, static_shape=True)
    trainer = gluon.Trainer(net.collect_params(), 'sgd', {'learning_rate': 0.001, 'wd': 5e-4, 'momentum': 0.9})
    loss = SSDMultiBoxLoss()
    ce_metric, smoothl1_metric = mx.metric.Loss('CrossEntropy'), mx.metric.Loss('SmoothL1')

    def step(batch):  # split_and_load copies the workers' shared-memory arrays to cpu(0)
        data, cls_targets, box_targets = (gluon.utils.split_and_load(x, [mx.cpu()])[0] for x in batch)
        with autograd.record():
            cls_pred, box_pred, _ = net(data)
            sum_loss, cls_loss, box_loss = loss([cls_pred], [box_pred], [cls_targets], [box_targets])
            autograd.backward(sum_loss)
        trainer.step(1)
        ce_metric.update(0, [value * data.shape[0] for value in cls_loss])
        smoothl1_metric.update(0, [value * data.shape[0] for value in box_loss])
    return loader, step


def worker_cpu_seconds(loader):
    """User + system CPU seconds used so far by the loader's worker processes (Linux /proc)."""
    ticks = 0
    for process in loader._worker_pool._pool:
        with open(f'/proc/{process.pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf('SC_CLK_TCK')


def run_epoch(loader, step):
    """One epoch; returns images, wall seconds, seconds waiting for batches, main and worker CPU seconds."""
    cpu, workers, start = time.process_time(), worker_cpu_seconds(loader), time.perf_counter()
    images, waiting, batches = 0, 0.0, iter(loader)
    while True:
        asked = time.perf_counter()
        batch = next(batches, None)
        waiting += time.perf_counter() - asked
        if batch is None:
            break
        step(batch)
        images += batch[0].shape[0]
    mx.nd.waitall()  # the last update belongs to this round
    return (images, time.perf_counter() - start, waiting, time.process_time() - cpu,
            worker_cpu_seconds(loader) - workers)


def measure(sides, rounds):
    """Rounds of one epoch per side, alternating which goes first; results per side and round."""
    results = {name: [] for name in sides}
    for index in range(rounds):
        order = list(sides) if index % 2 == 0 else list(sides)[::-1]
        for name in order:
            results[name].append(run_epoch(*sides[name]))
            images, seconds, waiting, main_cpu, worker_cpu = results[name][-1]
            print(f"round {index}{' (warm-up)' if index == 0 else ''} {name:8s}: {images / seconds:6.2f} images/s, "
                  f"waited {waiting:5.2f} s of {seconds:6.1f} s, CPU s/image main {main_cpu / images:.2f} "
                  f"workers {worker_cpu / images:.2f}", flush=True)
    return {name: rows[1:] for name, rows in results.items()}


def summarize(results):
    for name, rows in results.items():
        images, seconds, waiting, main_cpu, worker_cpu = (sum(column) for column in zip(*rows))
        print(f"{name:8s}: {images / seconds:6.2f} images/s ({images} images in {seconds:.1f} s, waiting "
              f"{100 * waiting / seconds:.0f}%), CPU s/image: main {main_cpu / images:.2f}, workers "
              f"{worker_cpu / images:.2f}")
    ratios = [(o[0] / o[1]) / (g[0] / g[1]) for o, g in zip(results['ours'], results['GluonCV'])]
    print(f"images/s ours / GluonCV: median {statistics.median(ratios):.3f} over {len(ratios)} rounds "
          f"({', '.join(f'{r:.3f}' for r in ratios)}); higher is better, target >= 1.0")


def main(argv=None):
    args = parse_args(argv)
    if args.rounds < 2:
        raise SystemExit('--rounds must be at least 2 (the first is warm-up)')
    print(f"SSD300 training iteration, batch {args.batch_size}, {args.num_workers} workers, "
          f"{args.iterations} iterations per round, {args.rounds} rounds; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix='bench-pipeline-') as root:
        make_dataset(root, args.batch_size * args.iterations, args.batch_size, args.seed)
        sides = {'ours': ours(root, args), 'GluonCV': gluoncv(root, args)}
        summarize(measure(sides, args.rounds))
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == '__main__':
    main()
