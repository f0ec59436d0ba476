"""Full training-iteration speed of SSD300 on CPU: train.py's loop vs GluonCV's train_ssd.py loop.

One iteration is everything a training epoch does per batch: JPEG decoding and augmentation in
the DataLoader workers, forward, backward, optimizer update, and reading the losses back. Both
sides read the same synthetic VOC-layout images (``ssd.data.synthetic``, 4 classes) with the same
batch size and number of worker processes:

- ours: exactly train.py's engine, ``ssd.training.engine`` (``make_loader``: ``DetectionDataset`` +
  ``EpochSampler`` in a process-pool DataLoader; ``build_module``: the vgg16_reduced 300 training
  Module with MultiBoxTarget in the graph, SGD; an epoch is ``run_epoch``: per batch
  ``forward_backward``, ``batch_losses``, ``update``);
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
import multiprocessing
import os
import statistics
import tempfile
import time

import mxnet as mx
from mxnet import autograd, gluon
from gluoncv.data import VOCDetection
from gluoncv.data.batchify import Stack, Tuple
from gluoncv.data.transforms.presets.ssd import SSDDefaultTrainTransform
from gluoncv.loss import SSDMultiBoxLoss
from gluoncv.model_zoo import get_model

from ssd.data import synthetic
from ssd.data.dataset import label_width
from ssd.inference.detector import contexts
from ssd.training import engine

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
    none), while ``ssd.data.synthetic`` leaves about 5% of its images empty: both sides train on the
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
    """train.py's training loader and Module; returns ``(loader, its workers, epoch)``, where
    ``epoch(batches)`` is the engine's ``run_epoch`` over ``batches``."""
    config = engine.TrainConfig(dataset='synthetic', data_root=root, network='vgg16_reduced', data_shape=SHAPE,
                                batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed,
                                optimizer='sgd', lr=1e-4, max_expand=4)  # GluonCV's optimizer and zoom-out
    # lr does not change the work per batch. From these random weights, SGD at train.py's 0.004
    # gives a NaN loss by the third update, and the engine stops on it; 1e-4 keeps it finite.
    mx.random.seed(args.seed)
    train_split, val_split = engine.open_splits(config)
    width = label_width(train_split.source, val_split.source)
    kv = mx.kv.create(config.kv_store)
    loader, workers = with_new_workers(lambda: engine.make_loader(train_split.source, config, width, True, kv))
    ctx = contexts(config.gpus, config.num_cpu_contexts)
    optimizer = engine.make_optimizer(config, 0, len(loader), len(ctx))
    module = engine.build_module(config, len(train_split.class_names), width, ctx, kv, optimizer)

    def epoch(batches):
        engine.run_epoch(module, optimizer, batches, 0, config, train_split.source)
    return loader, workers, epoch


class SyntheticVOC(VOCDetection):
    CLASSES = synthetic.CLASSES


def gluoncv(root, args):
    """GluonCV train_ssd.py's network, training loader and loop; returns ``(loader, its workers, epoch)``."""
    net = get_model('ssd_300_vgg16_atrous_custom', classes=synthetic.CLASSES, pretrained_base=False)
    net.initialize()
    with autograd.train_mode():  # fixed anchors for the target generation in the workers
        _, _, anchors = net(mx.nd.zeros((1, 3, SHAPE, SHAPE)))
    dataset = SyntheticVOC(root, splits=((2007, 'trainval'),))
    loader, workers = with_new_workers(lambda: gluon.data.DataLoader(
        dataset.transform(SSDDefaultTrainTransform(SHAPE, SHAPE, anchors)), args.batch_size, True,
        batchify_fn=Tuple(Stack(), Stack(), Stack()), last_batch='rollover', num_workers=args.num_workers))
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

    def epoch(batches):
        for batch in batches:
            step(batch)
    return loader, workers, epoch


def with_new_workers(make_loader):
    """``(make_loader(), its worker processes)``: the child processes that appeared meanwhile
    (a process-pool DataLoader starts its workers when it is made, and keeps them)."""
    before = set(multiprocessing.active_children())
    loader = make_loader()
    return loader, [p for p in multiprocessing.active_children() if p not in before]


def cpu_seconds(processes):
    """User + system CPU seconds used so far by ``processes`` (Linux /proc)."""
    ticks = 0
    for process in processes:
        with open(f'/proc/{process.pid}/stat') as f:
            fields = f.read().rsplit(')', 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf('SC_CLK_TCK')


class Timed:
    """Iterates over ``loader``, counting the images and the seconds spent waiting for batches."""

    def __init__(self, loader):
        self.loader, self.images, self.waiting = loader, 0, 0.0

    def __iter__(self):
        batches = iter(self.loader)
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            self.waiting += time.perf_counter() - asked
            if batch is None:
                return
            self.images += batch[0].shape[0]
            yield batch


def run_epoch(loader, workers, epoch):
    """One epoch; returns images, wall seconds, seconds waiting for batches, main and worker CPU seconds."""
    cpu, worker_cpu, start = time.process_time(), cpu_seconds(workers), time.perf_counter()
    batches = Timed(loader)
    epoch(batches)
    mx.nd.waitall()  # the last update belongs to this round
    return (batches.images, time.perf_counter() - start, batches.waiting, time.process_time() - cpu,
            cpu_seconds(workers) - worker_cpu)


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
