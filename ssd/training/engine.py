"""The SSD training engine behind train.py: data, Module, optimizer, epochs, validation, checkpoints.

``train(TrainConfig(...))`` runs a whole training as train.py does; the pieces (``open_splits``,
``make_loader``, ``make_optimizer``, ``build_module``, ``run_epoch``, ``save``, ``MetricsLog``)
are what the pipeline benchmark and the tests use. Every run writes ``PREFIX-symbol.json``,
``PREFIX-%04d.params`` (+ ``.states``, ``.json``) every epoch, ``PREFIX-best.params`` and
``PREFIX-metrics.csv`` / ``.png``; progress goes to the ``train`` logger.

The graph trained is the first three outputs of ``symbols.get_symbol_train`` (``cls_prob``,
``loc_loss``, ``cls_label``): its fourth, the monitoring detections, stays in mxnet-ssd's builder
but not in the trained Module (validation decodes with the inference graph).
"""
import csv
import dataclasses
import logging
import math
import os
import re
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Optional, Tuple, Union

import mxnet as mx
import numpy as np
from tqdm import tqdm

import symbols
from ssd import checkpoint, interrupts
from ssd.data.annotations import read_class_names
from ssd.data.dataset import DetectionDataset, EpochSampler, label_width
from ssd.data.sources import DataSpec, open_split, report_problems
from ssd.inference.detector import Detector, check_batch_split, contexts, evaluate_loader
from ssd.inference.evaluation import VOCEvaluator, format_ap_table
from . import distwatch

__all__ = ['TrainConfig', 'NonFiniteLoss', 'INITIALIZER', 'train', 'open_splits', 'first_epoch',
           'make_loader', 'build_module', 'initial_params', 'make_optimizer', 'run_epoch',
           'batch_losses', 'validate', 'save', 'MetricsLog']

log = logging.getLogger('train')
# He initialisation by fan-in. mxnet-ssd's fan-out variant gives MobileNet's depthwise filters
# (fan-in 9, fan-out 9 * channels) weights ~sqrt(channels) too small; the BatchNorm after them
# undoes the scale in the forward pass, but the effective learning rate of a weight followed by
# BatchNorm grows as 1 / |w|^2, so training from scratch diverged in its first steps.
INITIALIZER = mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run; the fields are train.py's options (``--lr`` -> ``lr``) with
    the same defaults, set names and epoch lists as tuples.

    Data: ``dataset`` one of synthetic/voc/coco/rec; ``train_sets``/``val_sets`` set names (the
    defaults are the synthetic and VOC ones; a rec dataset reads ``train_path``/``val_path``);
    ``class_names`` a comma list or a file; ``num_class`` checked against the class names.
    Epochs count completed epochs: ``resume``/``finetune`` start after epoch N of ``prefix``.
    ``lr_steps`` are epochs; ``gpus`` a comma list of GPU ids (empty: ``num_cpu_contexts`` CPUs).
    ``min_neg_samples``: hard negatives (class 0) taken from each image without objects by the
    training graph (``symbols.ssd.training_graph``; 0: such images add nothing to the loss).
    """
    # data
    dataset: str = 'synthetic'
    data_root: Optional[str] = None
    train_sets: Tuple[str, ...] = ('2007_trainval',)
    val_sets: Tuple[str, ...] = ('2007_test',)
    train_path: Optional[str] = None
    val_path: Optional[str] = None
    class_names: Optional[str] = None
    num_class: Optional[int] = None
    max_expand: float = 1.5
    num_workers: int = 2
    use_difficult: bool = False
    # model
    network: str = 'mobilenet0.25'
    data_shape: int = 256
    pretrained: Optional[str] = None
    resume: Optional[Union[int, str]] = None  # an epoch, or 'latest': the newest complete one
    finetune: Optional[int] = None
    freeze: Optional[str] = None
    # optimisation
    batch_size: int = 16
    optimizer: str = 'adam'
    lr: float = 0.004
    momentum: float = 0.9
    wd: float = 5e-4
    lr_mode: str = 'step'
    lr_steps: Tuple[int, ...] = (21, 25)
    lr_factor: float = 0.3
    warmup_epochs: float = 1.0
    begin_epoch: int = 0
    end_epoch: int = 28
    seed: int = 233
    min_neg_samples: int = symbols.ssd.EMPTY_IMAGE_NEGATIVES
    # devices
    gpus: str = ''
    num_cpu_contexts: int = 1
    kv_store: str = 'local'
    # output
    prefix: str = os.path.join('model', 'ssd')
    frequent: int = 20
    # validation
    nms: float = 0.45
    nms_topk: int = 400
    force_nms: bool = False
    overlap: float = 0.5
    voc07: bool = True
    val_interval: int = 5


class NonFiniteLoss(RuntimeError):
    """A loss or a weight became NaN or infinite; training stops without saving that state."""


def train(config):
    """Train from ``config`` to ``config.end_epoch``; returns 0, or 130 if interrupted (Ctrl-C:
    the weights are saved once, see README "What survives a crash").

    Raises ``NonFiniteLoss`` (nothing non-finite is saved; the message names the last good
    epoch), ``checkpoint.WriteError`` on a full disk (the previous epochs intact), ``ValueError``
    or ``FileNotFoundError`` for bad data or settings, with a message naming the value or file.
    """
    np.random.seed(config.seed)
    mx.random.seed(config.seed)
    ctx = contexts(config.gpus, config.num_cpu_contexts)
    check_batch_split(config.batch_size, ctx)
    for path in checkpoint.remove_stale_temporaries(config.prefix):
        log.info('removed %s, a temporary file of a run that was killed', path)
    if config.resume is not None:
        config = dataclasses.replace(config, resume=checkpoint.resume_epoch(config.prefix, config.resume))
        if config.resume >= config.end_epoch:  # --resume latest: known only now (a number is checked by train.py)
            raise ValueError(f"--resume: the newest complete epoch of {config.prefix} is {config.resume}: nothing to "
                             f"train up to --end-epoch {config.end_epoch}; pass a later --end-epoch")
    kv = mx.kv.create(config.kv_store)
    distwatch.watch_kvstore(kv)  # a lost parameter-server node ends this process
    train_split, val_split = open_splits(config)
    class_names = train_split.class_names
    width = label_width(train_split.source, val_split.source)
    log.info('%d training / %d validation images, %d classes, label width %d, devices %s',
             len(train_split.source), len(val_split.source), len(class_names), width, ctx)
    begin_epoch = first_epoch(config)
    train_loader = make_loader(train_split.source, config, width, train=True, kv=kv, epoch=begin_epoch)
    val_loader = make_loader(val_split.source, config, width, train=False)
    if kv.num_workers > 1:
        log.info('distributed training: worker %d of %d: %d batches per epoch', kv.rank, kv.num_workers,
                 len(train_loader))

    optimizer = make_optimizer(config, begin_epoch, len(train_loader), kv.num_workers * len(ctx))
    module = build_module(config, len(class_names), width, ctx, kv, optimizer)
    # with a parameter server the optimizer state lives on the servers: nothing to save here
    distributed = 'dist' in kv.type
    inference = symbols.get_symbol(config.network, len(class_names), config.data_shape, nms_thresh=config.nms,
                                   force_suppress=config.force_nms, nms_topk=config.nms_topk)
    history = MetricsLog(config.prefix, begin_epoch)
    best = history.best_map()
    last_good = config.resume  # the epoch a NaN stop falls back to: the last one saved (checked finite)
    for epoch in range(begin_epoch, config.end_epoch):
        described = {'epoch': epoch + 1, 'class_names': class_names, 'network': config.network,
                     'data_shape': config.data_shape}
        saved = False
        try:
            stats = run_epoch(module, optimizer, train_loader, epoch, config, train_split.source)
            if config.val_interval and ((epoch + 1) % config.val_interval == 0 or epoch + 1 == config.end_epoch):
                stats['val_mAP'] = validate(module, inference, val_loader, val_split.source, class_names, config,
                                            ctx, epoch)
            with interrupts.deferred():  # Ctrl-C here: the checkpoint, best copy and metrics are all written
                save(module, config.prefix, epoch + 1, {**described, **stats}, distributed)
                saved = True
                if stats.get('val_mAP', -1) > best:
                    best = stats['val_mAP']
                    checkpoint.save_best(config.prefix, epoch + 1)
                    log.info('epoch %d has the best mAP so far (%.4f): %s-best.params', epoch + 1, best,
                             config.prefix)
                history.append(epoch + 1, stats)
        except KeyboardInterrupt:
            return stop_interrupted(module, config.prefix, epoch + 1, described, saved, distributed)
        except NonFiniteLoss as error:
            raise NonFiniteLoss(f'{error}. {last_good_text(config.prefix, last_good)}; try a lower --lr.') from None
        last_good = epoch + 1
    return 0


def stop_interrupted(module, prefix, epoch, described, saved, distributed):
    """Ctrl-C: save the current weights as epoch ``epoch`` unless that is done already; 130."""
    with interrupts.deferred(then_raise=False):  # a second Ctrl-C must not cut this save short
        if not saved:
            save(module, prefix, epoch, {**described, 'interrupted': True}, distributed)
        log.warning('interrupted %s epoch %d: saved %s; resume with --resume %d', 'after' if saved else 'during',
                    epoch, checkpoint.params_path(prefix, epoch), epoch)
    return 130


def last_good_text(prefix, epoch):
    if epoch is None:
        return 'This run saved no checkpoint'
    return f'The last good checkpoint is epoch {epoch} of {prefix}'


def open_splits(config):
    class_names = read_class_names(config.class_names)
    # validation keeps difficult objects (flagged) whatever --use-difficult says: the scorer ignores them
    specs = [DataSpec(config.dataset, config.data_root, sets, path, class_names, config.num_class, use_difficult)
             for sets, path, use_difficult in ((config.train_sets, config.train_path, config.use_difficult),
                                               (config.val_sets, config.val_path, True))]
    train_split, val_split = open_split(specs[0]), open_split(specs[1])
    for split in (train_split, val_split):
        report_problems(split.problems, log)
    if len(train_split.source) == 0:
        raise ValueError('the training set is empty')
    if not any(train_split.source.object_counts()):  # e.g. --class-names that name no annotated class
        raise ValueError(f"the training set holds no object of the classes {train_split.class_names} "
                         f"({len(train_split.source)} images); check --class-names and the annotations")
    if len(val_split.source) == 0 and config.val_interval:
        raise ValueError(f"the validation set {', '.join(config.val_sets) or config.val_path} has no images; "
                         f"pass --val-interval 0 to train without validation")
    return train_split, val_split


def first_epoch(config):
    """Epochs already done: those of the --resume / --finetune checkpoint, else --begin-epoch."""
    for value in (config.resume, config.finetune):
        if value is not None:
            return value
    return config.begin_epoch


def make_loader(source, config, width, train, kv=None, epoch=0):
    dataset = DetectionDataset(source, config.data_shape, width, train=train, seed=config.seed,
                               max_expand=config.max_expand)
    if train:
        sampler = EpochSampler(len(dataset), shuffle=True, seed=config.seed,
                               part=(kv.rank, kv.num_workers) if kv is not None else (0, 1))
        sampler.epoch = epoch
        batches = mx.gluon.data.BatchSampler(sampler, config.batch_size, last_batch='discard')
        if len(batches) == 0:
            raise ValueError(f"--batch-size {config.batch_size} is larger than the training set "
                             f"({len(sampler)} images on this worker)")
    else:
        batches = mx.gluon.data.BatchSampler(EpochSampler(len(dataset), shuffle=False), config.batch_size, 'keep')
    return mx.gluon.data.DataLoader(dataset, batch_sampler=batches, num_workers=config.num_workers,
                                    thread_pool=False)


def build_module(config, num_classes, width, ctx, kv, optimizer):
    """The training Module, bound, initialised and updating with ``optimizer`` (``make_optimizer``)."""
    full = symbols.get_symbol_train(config.network, num_classes, config.data_shape, nms_thresh=config.nms,
                                    force_suppress=config.force_nms, nms_topk=config.nms_topk,
                                    minimum_negative_samples=config.min_neg_samples)
    # The losses come from the first three outputs; validation decodes with the inference graph,
    # so the monitoring detections (4th output) would only cost time on every training step.
    symbol = mx.sym.Group([full[0], full[1], full[2]])
    fixed = [n for n in symbol.list_arguments() if config.freeze and re.match(config.freeze, n)]
    if fixed:
        log.info('frozen parameters: %s', ', '.join(fixed))
    module = mx.mod.Module(symbol, data_names=['data'], label_names=['label'], context=ctx,
                           fixed_param_names=fixed)
    try:
        module.bind(data_shapes=[('data', (config.batch_size, 3, config.data_shape, config.data_shape))],
                    label_shapes=[('label', (config.batch_size, width, 6))])
    except RuntimeError as error:  # MXNetError, or Module's "simple_bind error" around it
        if 'failed to allocate' not in str(error).lower():
            raise
        raise ValueError(f"not enough memory on {ctx} for {config.network} at --data-shape {config.data_shape} "
                         f"with --batch-size {config.batch_size}: lower them") from None
    arg_params, aux_params, states = initial_params(config, module)
    module.init_params(initializer=INITIALIZER,
                       arg_params=arg_params, aux_params=aux_params, allow_missing=True, allow_extra=True)
    with warnings.catch_warnings():  # Module expects rescale 1/batch; 'valid' losses need 1/devices
        warnings.filterwarnings('ignore', message='Optimizer created manually')
        module.init_optimizer(kvstore=kv, optimizer=optimizer)
    if states:
        module.load_optimizer_states(states)
        log.info('optimizer state restored from %s', states)
    return module


def initial_params(config, module):
    """Parameters to start from: --resume, --finetune, --pretrained, or none (random)."""
    if config.resume is not None:
        path = checkpoint.params_path(config.prefix, config.resume)
        arg, aux = checkpoint.load_params(path)
        bad = checkpoint.non_finite_names(arg, aux)
        if bad:
            raise ValueError(f"--resume {config.resume}: {path} holds NaN or infinity ({', '.join(bad[:3])}); "
                             f"resume from an earlier epoch")
        states = checkpoint.saved_states(config.prefix, config.resume)
        log.info('resuming from epoch %d of %s (newest complete epoch: %s)', config.resume, config.prefix,
                 checkpoint.latest_epoch(config.prefix))
        if states is None:  # a dist_sync run keeps the optimizer state on its servers
            log.warning('epoch %d was saved without optimizer state: the optimizer (momentum, Adam moments) '
                        'starts from zero', config.resume)
        return arg, aux, states
    if config.finetune is not None:
        arg, aux = checkpoint.load_params(checkpoint.params_path(config.prefix, config.finetune))
        shapes = dict(zip(module.symbol.list_arguments(), module.symbol.infer_shape(
            **dict(module.data_shapes + module.label_shapes))[0]))
        dropped = [k for k, v in arg.items() if k in shapes and tuple(v.shape) != tuple(shapes[k])]
        for name in dropped:  # only the class predictors change shape with the class count
            del arg[name]
        log.info('fine-tuning from epoch %d; re-initialised: %s', config.finetune, ', '.join(dropped) or 'nothing')
        return arg, aux, None
    if config.pretrained:
        from symbols.convert import load_backbone_params
        if not os.path.isfile(config.pretrained):
            raise FileNotFoundError(f"--pretrained {config.pretrained} does not exist")
        try:
            arg, aux = load_backbone_params(config.network, config.pretrained)
        except Exception as error:  # truncated, not an NDArray file, another network's: several kinds
            reason = (str(error).strip().splitlines() or [type(error).__name__])[-1].split(', which contains')[0]
            raise ValueError(f"--pretrained {config.pretrained} is not a GluonCV ImageNet weights file of "
                             f"{config.network}'s backbone ({reason})") from error
        log.info('backbone initialised from %s (%d arrays)', config.pretrained, len(arg) + len(aux))
        return arg, aux, None
    return None, None, None


def make_optimizer(config, begin_epoch, batches_per_epoch, num_devices):
    """The optimizer with its warm-up and step schedule; ``num_devices`` counts all workers' devices."""
    batches_per_epoch = max(1, batches_per_epoch)
    steps = [s * batches_per_epoch for s in config.lr_steps if s > 0]
    warmup = int(config.warmup_epochs * batches_per_epoch)
    scheduler = None
    warmup_options = dict(base_lr=config.lr, warmup_steps=warmup, warmup_begin_lr=config.lr * 0.01,
                          warmup_mode='linear')
    if config.lr_mode == 'cosine':
        total = max(config.end_epoch * batches_per_epoch, warmup + 1)
        scheduler = mx.lr_scheduler.CosineScheduler(total, final_lr=0, **warmup_options)
    elif steps or warmup:
        scheduler = mx.lr_scheduler.MultiFactorScheduler(step=steps or [10 ** 12], factor=config.lr_factor,
                                                         **warmup_options)
    params = dict(learning_rate=config.lr, wd=config.wd, lr_scheduler=scheduler,
                  rescale_grad=1.0 / num_devices,  # losses are 'valid'-normalised per device
                  begin_num_update=begin_epoch * batches_per_epoch)
    if config.optimizer in ('sgd', 'nag', 'rmsprop'):
        params['momentum' if config.optimizer != 'rmsprop' else 'gamma2'] = config.momentum
    return mx.optimizer.create(config.optimizer, **params)


def run_epoch(module, optimizer, loader, epoch, config, source):
    """One pass over ``loader``; returns the epoch's mean losses, learning rate and skip count.

    ``optimizer`` is the one ``module`` updates with: its ``learning_rate`` is the rate reached.
    """
    totals = np.zeros(3)  # cross entropy, smooth L1, batches
    skipped, images, start = [], 0, time.time()
    bar = tqdm(loader, desc=f'epoch {epoch + 1}/{config.end_epoch}', unit='batch', leave=False,
               disable=not sys.stderr.isatty())
    for batch_index, (data, label, meta) in enumerate(bar):
        module.forward_backward(mx.io.DataBatch(data=[data], label=[label]))
        cross_entropy, smooth_l1 = batch_losses(module.get_outputs())
        if not (math.isfinite(cross_entropy) and math.isfinite(smooth_l1)):
            raise NonFiniteLoss(f'non-finite loss at epoch {epoch + 1}, batch {batch_index + 1} (CrossEntropy '
                                f'{cross_entropy}, SmoothL1 {smooth_l1}); stopped without saving this state')
        module.update()
        totals += (cross_entropy, smooth_l1, 1)
        images += data.shape[0]
        skipped += [int(i) for i in meta[:, 3].asnumpy() if i >= 0]
        speed = images / max(time.time() - start, 1e-9)
        bar.set_postfix(CE=f'{totals[0] / totals[2]:.3f}', L1=f'{totals[1] / totals[2]:.3f}', img_s=f'{speed:.1f}')
        if config.frequent and (batch_index + 1) % config.frequent == 0:
            log.info('epoch %d batch %d: CrossEntropy %.4f SmoothL1 %.4f, %.1f images/s', epoch + 1,
                     batch_index + 1, totals[0] / totals[2], totals[1] / totals[2], speed)
    for index in sorted(set(skipped)):
        log.warning('skipped unreadable image %s', source.name(index))
    stats = {'CrossEntropy': totals[0] / max(totals[2], 1), 'SmoothL1': totals[1] / max(totals[2], 1),
             'lr': optimizer.learning_rate, 'skipped_images': len(set(skipped)),
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


def validate(module, inference, loader, source, class_names, config, ctx, epoch):
    """The VOC mAP (in pixels) of ``module``'s current weights decoded by the ``inference`` graph."""
    # A fresh inference Module every time: MXNet 1.9.1's oneDNN (MKLDNN) backend keeps the
    # reordered convolution weights of a bound inference executor, so set_params on a
    # reused one would validate stale weights.
    detector = Detector(inference, config.batch_size, config.data_shape, ctx, *module.get_params())
    summary, _ = evaluate_loader(detector, loader, source, VOCEvaluator(class_names, config.voc07, config.overlap))
    log.info('epoch %d validation (%s AP in pixels, IoU %.2f):\n%s', epoch + 1, 'VOC07 11-point'
             if config.voc07 else 'area', config.overlap, format_ap_table(summary))
    return summary[-1][1]


def save(module, prefix, epoch, extra, distributed=False):
    """Checkpoint ``module`` as epoch ``epoch`` of ``prefix``; ``distributed``: the optimizer state
    is on a parameter server, so no ``.states`` file. Weights holding NaN or infinity raise
    ``NonFiniteLoss`` instead: the update of an epoch's last batch can break them while that
    batch's loss was still finite."""
    arg_params, aux_params = module.get_params()
    bad = checkpoint.non_finite_names(arg_params, aux_params)
    if bad:
        raise NonFiniteLoss(f"the weights of epoch {epoch} hold NaN or infinity ({', '.join(bad[:3])}"
                            f"{', ...' if len(bad) > 3 else ''}); not saved")
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
        with interrupts.deferred():  # Ctrl-C while plotting: both files are finished first
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
