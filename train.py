"""Train an SSD (mxnet-ssd's train.py, rebuilt on multibox's operators).

    python train.py                      # mobilenet0.25, 256 px, synthetic shapes, CPU
    python train.py --gpus 0,1 --dataset voc --data-root ~/data/VOCdevkit --network vgg16_reduced \\
        --data-shape 300 --pretrained vgg16_atrous.params --batch-size 32 --optimizer sgd --lr 0.004 \\
        --end-epoch 240 --lr-steps 160,200 --lr-factor 0.1 --max-expand 4

Writes ``PREFIX-symbol.json``, ``PREFIX-%04d.params`` (+ ``.states``, ``.json``) every epoch,
``PREFIX-best.params``, ``PREFIX-metrics.csv`` / ``.png`` and a log file. The script parses the
options into an ``ssd.training.TrainConfig`` and runs ``ssd.training.train``.
"""
import signal
import sys

# Ctrl-C while MXNet loads (seconds): nothing to save yet, exit 130 quietly. An ignored SIGINT
# (a background job of a non-interactive shell) stays ignored, here and in main().
if __name__ == '__main__' and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
    signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

# the imports come after that handler on purpose (flake8: E402)
import argparse
import dataclasses
import logging
import os

from ssd import distwatch

try:  # before mxnet, whose import runs the server and scheduler roles of --kv-store dist_*
    distwatch.prepare_role()
except ValueError as bad_setting:
    print(f'train.py: {bad_setting}', file=sys.stderr)
    sys.exit(2)

import symbols
from ssd import checkpoint, training

DEFAULT_SETS = {'synthetic': ('2007_trainval', '2007_test'), 'voc': ('2007_trainval,2012_trainval', '2007_test'),
                'coco': ('train2017', 'val2017'), 'rec': ('', '')}
log = logging.getLogger('train')


def resume_value(text):
    """``--resume``'s value: an epoch number or ``latest``."""
    if text == 'latest' or (text.isdigit() and int(text) >= 0):
        return text if text == 'latest' else int(text)
    raise argparse.ArgumentTypeError(f"expected an epoch number or 'latest', got {text!r}")


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
    model.add_argument('--resume', type=resume_value, nargs='?', const='latest', default=None, metavar='N|latest',
                       help='resume from epoch N of --prefix, or (no value, or "latest") from its newest complete '
                            'epoch; an incomplete epoch (a save cut short) is refused, one saved without optimizer '
                            'state (dist_sync) resumes with a warning')
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
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # from here on Ctrl-C saves what there is
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return training.train(config_from_args(args))
    except KeyboardInterrupt:
        log.warning('interrupted before the first epoch ended: nothing saved')
        return 130
    except (training.NonFiniteLoss, checkpoint.WriteError) as error:
        log.error('%s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('%s', error)
        return 2


def config_from_args(args):
    """The engine's ``TrainConfig`` from the parsed options (lists become tuples)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(training.TrainConfig)}
    return training.TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def setup_logging(path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr), LogFile(path)]
    logging.basicConfig(level=logging.INFO, format='%(asctime)s %(message)s', handlers=handlers, force=True)


class LogFile(logging.FileHandler):
    """The log file; when it cannot be written (a full disk) it stops, saying so once on stderr,
    instead of logging's traceback for every record. The stderr handler keeps logging."""

    broken = False

    def emit(self, record):
        if not self.broken:
            super().emit(record)

    def handleError(self, record):
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            return super().handleError(record)
        self.broken = True
        sys.stderr.write(f'log file {self.baseFilename}: {error.strerror or error}; logging to stderr only\n')


if __name__ == '__main__':
    sys.exit(main())
