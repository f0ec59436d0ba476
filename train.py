"""Train an SSD (mxnet-ssd's train.py, rebuilt on multibox's operators).

    python train.py                      # mobilenet0.25, 256 px, synthetic shapes, CPU
    python train.py --gpus 0,1 --dataset voc --data-root ~/data/VOCdevkit --network vgg16_reduced \\
        --data-shape 300 --pretrained vgg16_atrous.params --batch-size 32 --optimizer sgd --lr 0.004 \\
        --end-epoch 240 --lr-steps 160,200 --lr-factor 0.1 --max-expand 4

Writes ``PREFIX-symbol.json``, ``PREFIX-%04d.params`` (+ ``.states``, ``.json``) every epoch,
``PREFIX-best.params``, ``PREFIX-metrics.csv`` / ``.png`` and a log file.
"""
import argparse
import csv
import logging
import math
import os
import re
import sys
import time
import warnings

from ssd import distwatch

try:  # before mxnet, whose import runs the server and scheduler roles of --kv-store dist_*
    distwatch.prepare_role()
except ValueError as bad_setting:
    print(f'train.py: {bad_setting}', file=sys.stderr)
    sys.exit(2)

import mxnet as mx
import numpy as np
from tqdm import tqdm

import symbols
from ssd import checkpoint
from ssd.annotations import read_class_names
from ssd.dataset import DetectionDataset, EpochSampler, label_width
from ssd.evaluation import VOCEvaluator, format_ap_table
from ssd.inference import Detector, contexts, evaluate_loader
from ssd.sources import DataSpec, open_split, report_problems

DEFAULT_SETS = {'synthetic': ('2007_trainval', '2007_test'), 'voc': ('2007_trainval,2012_trainval', '2007_test'),
                'coco': ('train2017', 'val2017'), 'rec': ('', '')}
log = logging.getLogger('train')
# He initialisation by fan-in. mxnet-ssd's fan-out variant gives MobileNet's depthwise filters
# (fan-in 9, fan-out 9 * channels) weights ~sqrt(channels) too small; the BatchNorm after them
# undoes the scale in the forward pass, but the effective learning rate of a weight followed by
# BatchNorm grows as 1 / |w|^2, so training from scratch diverged in its first steps.
INITIALIZER = mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; training stops without saving that state."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group('data')
    data.add_argument('--dataset', choices=['synthetic', 'voc', 'coco', 'rec'], default='synthetic')
    data.add_argument('--data-root', default=None, help='VOCdevkit folder (voc), COCO root (coco), '
                      'or where to generate the synthetic set (default: ~/.cache/multibox/synthetic)')
    data.add_argument('--train-sets', default=None, help='voc: 2007_trainval,2012_trainval; coco: train2017')
    data.add_argument('--val-sets', default=None, help='voc: 2007_test; coco: val2017')
    data.add_argument('--train-path', default=None, help='training .rec (--dataset rec)')
    data.add_argument('--val-path', default=None, help='validation .rec (--dataset rec)')
    data.add_argument('--class-names', default=None, help='comma list, or a file with one name per line')
    data.add_argument('--num-class', type=int, default=None, help='number of object classes (checked)')
    data.add_argument('--max-expand', type=float, default=1.5,
                      help='largest zoom-out ratio of the training augmentation; GluonCV and the VOC recipe use 4, '
                           'the synthetic default 1.5 (its objects span at least 10%% of the shorter side)')
    data.add_argument('--num-workers', type=int, default=2, help='data loading processes (0: in process)')
    model = p.add_argument_group('model')
    model.add_argument('--network', default='mobilenet0.25', choices=symbols.network_names())
    model.add_argument('--data-shape', type=int, default=256)
    model.add_argument('--pretrained', default=None, help="backbone .params (GluonCV ImageNet weights)")
    model.add_argument('--resume', type=int, default=None, help='resume from epoch N of --prefix')
    model.add_argument('--finetune', type=int, default=None,
                       help='start from epoch N of --prefix; class predictors are re-initialised if the class count differs')
    model.add_argument('--freeze', default=None, help='regex of parameter names kept fixed')
    opt = p.add_argument_group('optimisation')
    opt.add_argument('--batch-size', type=int, default=16, help='total over all devices')
    # defaults: the out-of-the-box synthetic run (from scratch, 15 minutes); mxnet-ssd's VOC
    # recipe with a pretrained VGG16 is --optimizer sgd --lr 0.004 --lr-factor 0.1 --max-expand 4 (see README)
    opt.add_argument('--optimizer', default='adam', choices=['sgd', 'nag', 'adam', 'rmsprop'])
    opt.add_argument('--lr', type=float, default=0.004)
    opt.add_argument('--momentum', type=float, default=0.9)
    opt.add_argument('--wd', type=float, default=5e-4)
    opt.add_argument('--lr-mode', default='step', choices=['step', 'cosine'],
                     help='step: multiply by --lr-factor at --lr-steps; cosine: decay to 0 by --end-epoch')
    opt.add_argument('--lr-steps', default='15,18', help='comma list of epochs where lr is multiplied by --lr-factor')
    opt.add_argument('--lr-factor', type=float, default=0.3)
    opt.add_argument('--warmup-epochs', type=float, default=1.0)
    opt.add_argument('--begin-epoch', type=int, default=0)
    opt.add_argument('--end-epoch', type=int, default=20)
    opt.add_argument('--seed', type=int, default=233)
    opt.add_argument('--min-neg-samples', type=int, default=symbols.ssd.EMPTY_IMAGE_NEGATIVES,
                     help='hard negatives (class 0) taken from each image without objects (0: such images '
                          'add nothing to the loss, as with the native MultiBoxTarget on CPU)')
    dev = p.add_argument_group('devices')
    dev.add_argument('--gpus', default='', help='comma list of GPU ids; empty: CPU')
    dev.add_argument('--num-cpu-contexts', type=int, default=1, help='data-parallel CPU contexts when --gpus is empty')
    dev.add_argument('--kv-store', default='local', choices=['local', 'device', 'dist_sync', 'dist_async'])
    out = p.add_argument_group('output')
    out.add_argument('--prefix', default=os.path.join('model', 'ssd'), help='checkpoint prefix')
    out.add_argument('--frequent', type=int, default=20, help='log every N batches')
    out.add_argument('--log', default=None, help='log file (default: PREFIX-train.log)')
    val = p.add_argument_group('validation')
    val.add_argument('--nms', type=float, default=0.45)
    val.add_argument('--nms-topk', type=int, default=400)
    val.add_argument('--force-nms', dest='force_nms', action='store_true')
    val.add_argument('--no-force-nms', dest='force_nms', action='store_false')
    val.add_argument('--overlap', type=float, default=0.5, help='IoU of a true positive')
    val.add_argument('--voc07', dest='voc07', action='store_true', help='11-point VOC07 AP (default)')
    val.add_argument('--no-voc07', dest='voc07', action='store_false', help='area-based AP')
    val.add_argument('--use-difficult', dest='use_difficult', action='store_true',
                     help='train on objects marked difficult too (validation always ignores them, as the VOC devkit)')
    val.add_argument('--no-use-difficult', dest='use_difficult', action='store_false')
    val.add_argument('--val-interval', type=int, default=5,
                     help='validate every N epochs and after the last one (0: never)')
    p.set_defaults(voc07=True, use_difficult=False, force_nms=False)
    args = p.parse_args(argv)
    train_default, val_default = DEFAULT_SETS[args.dataset]
    args.train_sets = [s for s in (args.train_sets or train_default).split(',') if s]
    args.val_sets = [s for s in (args.val_sets or val_default).split(',') if s]
    args.lr_steps = [int(s) for s in args.lr_steps.split(',') if s.strip()]
    if args.batch_size < 1:
        p.error(f"--batch-size must be positive, got {args.batch_size}")
    if not args.max_expand >= 1:  # also rejects NaN
        p.error(f"--max-expand must be >= 1 (1: no zoom-out), got {args.max_expand}")
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_logging(args.log or f'{args.prefix}-train.log')
    try:
        return train(args)
    except NonFiniteLoss as error:
        log.error('%s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('%s', error)
        return 2


def setup_logging(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(path)]
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', handlers=handlers, force=True)


def train(args):
    np.random.seed(args.seed)
    mx.random.seed(args.seed)
    ctx = contexts(args.gpus, args.num_cpu_contexts)
    kv = mx.kv.create(args.kv_store)
    distwatch.watch_kvstore(kv)  # a lost parameter-server node ends this process
    train_split, val_split = open_splits(args)
    class_names = train_split.class_names
    width = label_width(train_split.source, val_split.source)
    log.info('%d training / %d validation images, %d classes, label width %d, devices %s',
             len(train_split.source), len(val_split.source), len(class_names), width, ctx)
    begin_epoch = first_epoch(args)
    train_loader = make_loader(train_split.source, args, width, train=True, kv=kv, epoch=begin_epoch)
    val_loader = make_loader(val_split.source, args, width, train=False)
    if kv.num_workers > 1:
        log.info('distributed training: worker %d of %d: %d batches per epoch', kv.rank, kv.num_workers,
                 len(train_loader))

    module = build_module(args, len(class_names), width, ctx, kv, begin_epoch, len(train_loader))
    inference = symbols.get_symbol(args.network, len(class_names), args.data_shape, nms_thresh=args.nms,
                                   force_suppress=args.force_nms, nms_topk=args.nms_topk)
    history = MetricsLog(args.prefix, begin_epoch)
    best = history.best_map()
    for epoch in range(begin_epoch, args.end_epoch):
        try:
            stats = run_epoch(module, train_loader, epoch, args, train_split.source)
        except KeyboardInterrupt:
            save(module, args.prefix, epoch + 1, {'epoch': epoch + 1, 'interrupted': True})
            log.warning('interrupted during epoch %d: saved %s; resume with --resume %d',
                        epoch + 1, checkpoint.params_path(args.prefix, epoch + 1), epoch + 1)
            return 130
        if args.val_interval and ((epoch + 1) % args.val_interval == 0 or epoch + 1 == args.end_epoch):
            # A fresh inference Module every time: MXNet 1.9.1's oneDNN (MKLDNN) backend keeps the
            # reordered convolution weights of a bound inference executor, so set_params on a
            # reused one would validate stale weights.
            detector = Detector(inference, args.batch_size, args.data_shape, ctx, *module.get_params())
            summary, _ = evaluate_loader(detector, val_loader, val_split.source,
                                         VOCEvaluator(class_names, args.voc07, args.overlap))
            log.info('epoch %d validation (%s AP in pixels, IoU %.2f):\n%s', epoch + 1, 'VOC07 11-point'
                     if args.voc07 else 'area', args.overlap, format_ap_table(summary))
            stats['val_mAP'] = summary[-1][1]
        save(module, args.prefix, epoch + 1, {'epoch': epoch + 1, 'class_names': class_names,
                                              'network': args.network, 'data_shape': args.data_shape, **stats})
        if stats.get('val_mAP', -1) > best:
            best = stats['val_mAP']
            checkpoint.save_best(args.prefix, epoch + 1)
            log.info('epoch %d has the best mAP so far (%.4f): %s-best.params', epoch + 1, best, args.prefix)
        history.append(epoch + 1, stats)
    return 0


def open_splits(args):
    class_names = read_class_names(args.class_names)
    # validation keeps difficult objects (flagged) whatever --use-difficult says: the scorer ignores them
    specs = [DataSpec(args.dataset, args.data_root, sets, path, class_names, args.num_class, use_difficult)
             for sets, path, use_difficult in ((args.train_sets, args.train_path, args.use_difficult),
                                               (args.val_sets, args.val_path, True))]
    train_split, val_split = open_split(specs[0]), open_split(specs[1])
    for split in (train_split, val_split):
        report_problems(split.problems, log)
    if args.num_class is not None and args.num_class != len(train_split.class_names):
        raise ValueError(f"--num-class {args.num_class} does not match the {len(train_split.class_names)} "
                         f"class names {train_split.class_names}")
    if len(train_split.source) == 0:
        raise ValueError('the training set is empty')
    return train_split, val_split


def first_epoch(args):
    """Epochs already done: those of the --resume / --finetune checkpoint, else --begin-epoch."""
    for value in (args.resume, args.finetune):
        if value is not None:
            return value
    return args.begin_epoch


def make_loader(source, args, width, train, kv=None, epoch=0):
    dataset = DetectionDataset(source, args.data_shape, width, train=train, seed=args.seed,
                               max_expand=args.max_expand)
    if train:
        sampler = EpochSampler(len(dataset), shuffle=True, seed=args.seed,
                               part=(kv.rank, kv.num_workers) if kv is not None else (0, 1))
        sampler.epoch = epoch
        batches = mx.gluon.data.BatchSampler(sampler, args.batch_size, last_batch='discard')
        if len(batches) == 0:
            raise ValueError(f"--batch-size {args.batch_size} is larger than the training set "
                             f"({len(sampler)} images on this worker)")
    else:
        batches = mx.gluon.data.BatchSampler(EpochSampler(len(dataset), shuffle=False), args.batch_size, 'keep')
    return mx.gluon.data.DataLoader(dataset, batch_sampler=batches, num_workers=args.num_workers,
                                    thread_pool=False)


def build_module(args, num_classes, width, ctx, kv, begin_epoch, batches_per_epoch):
    """The training Module, bound, initialised and with its optimizer."""
    full = symbols.get_symbol_train(args.network, num_classes, args.data_shape, nms_thresh=args.nms,
                                    force_suppress=args.force_nms, nms_topk=args.nms_topk,
                                    minimum_negative_samples=args.min_neg_samples)
    # The losses come from the first three outputs; validation decodes with the inference graph,
    # so the monitoring detections (4th output) would only cost time on every training step.
    symbol = mx.sym.Group([full[0], full[1], full[2]])
    fixed = [n for n in symbol.list_arguments() if args.freeze and re.match(args.freeze, n)]
    if fixed:
        log.info('frozen parameters: %s', ', '.join(fixed))
    module = mx.mod.Module(symbol, data_names=['data'], label_names=['label'], context=ctx,
                           fixed_param_names=fixed)
    module.bind(data_shapes=[('data', (args.batch_size, 3, args.data_shape, args.data_shape))],
                label_shapes=[('label', (args.batch_size, width, 6))])
    arg_params, aux_params, states = initial_params(args, module)
    module.init_params(initializer=INITIALIZER,
                       arg_params=arg_params, aux_params=aux_params, allow_missing=True, allow_extra=True)
    with warnings.catch_warnings():  # Module expects rescale 1/batch; 'valid' losses need 1/devices
        warnings.filterwarnings('ignore', message='Optimizer created manually')
        module.init_optimizer(kvstore=kv, optimizer=make_optimizer(args, begin_epoch, batches_per_epoch,
                                                                    kv.num_workers * len(ctx)))
    if states:
        module.load_optimizer_states(states)
        log.info('optimizer state restored from %s', states)
    return module


def initial_params(args, module):
    """Parameters to start from: --resume, --finetune, --pretrained, or none (random)."""
    if args.resume is not None:
        arg, aux = checkpoint.load_params(checkpoint.params_path(args.prefix, args.resume))
        states = checkpoint.states_path(args.prefix, args.resume)
        log.info('resuming from epoch %d of %s', args.resume, args.prefix)
        return arg, aux, states if os.path.isfile(states) else None
    if args.finetune is not None:
        arg, aux = checkpoint.load_params(checkpoint.params_path(args.prefix, args.finetune))
        shapes = dict(zip(module.symbol.list_arguments(), module.symbol.infer_shape(
            **dict(module.data_shapes + module.label_shapes))[0]))
        dropped = [k for k, v in arg.items() if k in shapes and tuple(v.shape) != tuple(shapes[k])]
        for name in dropped:  # only the class predictors change shape with the class count
            del arg[name]
        log.info('fine-tuning from epoch %d; re-initialised: %s', args.finetune, ', '.join(dropped) or 'nothing')
        return arg, aux, None
    if args.pretrained:
        from symbols.convert import load_backbone_params
        arg, aux = load_backbone_params(args.network, args.pretrained)
        log.info('backbone initialised from %s (%d arrays)', args.pretrained, len(arg) + len(aux))
        return arg, aux, None
    return None, None, None


def make_optimizer(args, begin_epoch, batches_per_epoch, num_devices):
    """The optimizer with its warm-up and step schedule; ``num_devices`` counts all workers' devices."""
    batches_per_epoch = max(1, batches_per_epoch)
    steps = [s * batches_per_epoch for s in args.lr_steps if s > 0]
    warmup = int(args.warmup_epochs * batches_per_epoch)
    scheduler = None
    warmup_options = dict(base_lr=args.lr, warmup_steps=warmup, warmup_begin_lr=args.lr * 0.01, warmup_mode='linear')
    if args.lr_mode == 'cosine':
        total = max(args.end_epoch * batches_per_epoch, warmup + 1)
        scheduler = mx.lr_scheduler.CosineScheduler(total, final_lr=0, **warmup_options)
    elif steps or warmup:
        scheduler = mx.lr_scheduler.MultiFactorScheduler(step=steps or [10 ** 12], factor=args.lr_factor,
                                                         **warmup_options)
    params = dict(learning_rate=args.lr, wd=args.wd, lr_scheduler=scheduler,
                  rescale_grad=1.0 / num_devices,  # losses are 'valid'-normalised per device
                  begin_num_update=begin_epoch * batches_per_epoch)
    if args.optimizer in ('sgd', 'nag', 'rmsprop'):
        params['momentum' if args.optimizer != 'rmsprop' else 'gamma2'] = args.momentum
    return mx.optimizer.create(args.optimizer, **params)


def run_epoch(module, loader, epoch, args, source):
    """One pass over ``loader``; returns the epoch's mean losses, learning rate and skip count."""
    totals = np.zeros(3)  # cross entropy, smooth L1, batches
    skipped, images, start = [], 0, time.time()
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{args.end_epoch}', unit='batch', leave=False,
               disable=not sys.stderr.isatty())
    for batch_index, (data, label, meta) in enumerate(bar):
        module.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
        cross_entropy, smooth_l1 = batch_losses(module.get_outputs())
        if not (math.isfinite(cross_entropy) and math.isfinite(smooth_l1)):
            raise NonFiniteLoss(f'non-finite loss at epoch {epoch + 1}, batch {batch_index + 1} (CrossEntropy '
                                f'{cross_entropy}, SmoothL1 {smooth_l1}); stopped without saving this state. '
                                f'The last good checkpoint is epoch {epoch} of {args.prefix}; try a lower --lr.')
        module.update()
        totals += (cross_entropy, smooth_l1, 1)
        images += data.shape[0]
        skipped += [int(i) for i in meta[:, 3].asnumpy() if i >= 0]
        speed = images / max(time.time() - start, 1e-9)
        bar.set_postfix(CE=f'{totals[0] / totals[2]:.3f}', L1=f'{totals[1] / totals[2]:.3f}', img_s=f'{speed:.1f}')
        if args.frequent and (batch_index + 1) % args.frequent == 0:
            log.info('epoch %d batch %d: CrossEntropy %.4f SmoothL1 %.4f, %.1f images/s', epoch + 1,
                     batch_index + 1, totals[0] / totals[2], totals[1] / totals[2], speed)
    for index in sorted(set(skipped)):
        log.warning('skipped unreadable image %s', source.name(index))
    stats = {'CrossEntropy': totals[0] / max(totals[2], 1), 'SmoothL1': totals[1] / max(totals[2], 1),
             'lr': module._optimizer.learning_rate, 'skipped_images': len(set(skipped)),
             'seconds': time.time() - start}
    log.info('epoch %d: CrossEntropy %.4f SmoothL1 %.4f lr %.5g, %d images in %.0f s (%.1f images/s), '
             '%d unreadable images skipped', epoch + 1, stats['CrossEntropy'], stats['SmoothL1'], stats['lr'],
             images, stats['seconds'], images / max(stats['seconds'], 1e-9), stats['skipped_images'])
    return stats


def batch_losses(outputs):
    """Mean cross entropy over labelled anchors and smooth L1 per positive anchor of one batch.

    ``outputs``: the training graph's ``cls_prob`` (B, C+1, N), ``loc_loss`` (B, 4N), ``cls_label`` (B, N).
    """
    cls_prob, loc_loss, cls_label = outputs[:3]
    labelled = cls_label >= 0
    prob = mx.nd.pick(cls_prob, mx.nd.maximum(cls_label, 0), axis=1)
    cross_entropy = -(mx.nd.log(prob + 1e-12) * labelled).sum() / mx.nd.maximum(labelled.sum(), 1)
    smooth_l1 = loc_loss.sum() / mx.nd.maximum((cls_label > 0).sum(), 1)
    values = mx.nd.concat(cross_entropy, smooth_l1, dim=0).asnumpy()
    return float(values[0]), float(values[1])


def save(module, prefix, epoch, extra):
    arg_params, aux_params = module.get_params()
    # with a parameter server the optimizer state lives on the servers: nothing to save here
    distributed = 'dist' in module._kvstore.type if module._kvstore is not None else False
    checkpoint.save(prefix, epoch, module.symbol, arg_params, aux_params,
                    save_states=None if distributed else module.save_optimizer_states, extra=extra)
    log.info('saved %s', checkpoint.params_path(prefix, epoch))


class MetricsLog:
    """``PREFIX-metrics.csv`` (one row per epoch) and its plot ``PREFIX-metrics.png``."""

    COLUMNS = ['epoch', 'CrossEntropy', 'SmoothL1', 'lr', 'val_mAP', 'skipped_images', 'seconds']

    def __init__(self, prefix, begin_epoch):
        self.csv_path, self.png_path = f'{prefix}-metrics.csv', f'{prefix}-metrics.png'
        self.rows = []
        if os.path.isfile(self.csv_path):  # a resumed run keeps the rows before its first epoch
            with open(self.csv_path) as f:
                self.rows = [r for r in csv.DictReader(f) if int(r['epoch']) <= begin_epoch]

    def best_map(self):
        values = [float(r['val_mAP']) for r in self.rows if r.get('val_mAP') not in (None, '')]
        return max(values, default=-1.0)

    def append(self, epoch, stats):
        self.rows.append({'epoch': epoch, **{k: stats.get(k, '') for k in self.COLUMNS[1:]}})
        checkpoint.atomic_write(self.csv_path, self._write_csv)
        checkpoint.atomic_write(self.png_path, self._plot)

    def _write_csv(self, path):
        with open(path, 'w', newline='') as f:
            writer = csv.DictWriter(f, fieldnames=self.COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)

    def _plot(self, path):
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        epochs = [int(r['epoch']) for r in self.rows]
        figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for ax, key in zip(axes, ('CrossEntropy', 'SmoothL1', 'val_mAP')):
            points = [(e, float(r[key])) for e, r in zip(epochs, self.rows) if r.get(key) not in (None, '')]
            if points:
                ax.plot(*zip(*points), marker='o')
            ax.set_title(key)
            ax.set_xlabel('epoch')
            ax.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path, format='png')
        plt.close(figure)


if __name__ == '__main__':
    sys.exit(main())
