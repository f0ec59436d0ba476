"""Train an SSD (mxnet-ssd's train.py, rebuilt on multibox's operators).

    python train.py                      # mobilenet0.25, 256 px, synthetic shapes, CPU
    python train.py --gpus 0,1 --dataset voc --data-root ~/data/VOCdevkit --network vgg16_reduced \\
        --data-shape 300 --pretrained vgg16_atrous.params --batch-size 32 --optimizer sgd --lr 0.004 \\
        --end-epoch 240 --lr-steps 160,200 --lr-factor 0.1 --max-expand 4

Writes ``PREFIX-symbol.json``, ``PREFIX-%04d.params`` (+ ``.states``, ``.json``) every epoch,
``PREFIX-best.params``, ``PREFIX-metrics.csv`` / ``.png`` and a log file. The script parses the
options into an ``ssd.training.engine.TrainConfig`` and runs ``ssd.training.engine.train``.
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

from ssd.training import distwatch

try:  # before mxnet, whose import runs the server and scheduler roles of --kv-store dist_*
    distwatch.prepare_role()
except ValueError as bad_setting:
    print(f'train.py: {bad_setting}', file=sys.stderr)
    sys.exit(2)

import symbols
from ssd import checkpoint, options
from ssd.training import engine

log = logging.getLogger('train')


def resume_value(text):
    """``--resume``'s value: an epoch number or ``latest``."""
    if text == 'latest' or (text.isdigit() and int(text) >= 0):
        return text if text == 'latest' else int(text)
    raise argparse.ArgumentTypeError(f"expected an epoch number or 'latest', got {text!r}")


def parse_args(argv=None):
    """The command line; every value is checked here (``ssd.options``): a bad one exits 2 naming it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = options.add_data_options(p, training=True)
    data.add_argument('--max-expand', type=options.zoom, default=1.5,
                      help='largest zoom-out ratio of the training augmentation; GluonCV and the VOC recipe use 4, '
                           'the synthetic default 1.5 (its objects span at least 10%% of the shorter side)')
    model = p.add_argument_group('model')
    model.add_argument('--network', default='mobilenet0.25', choices=symbols.network_names())
    model.add_argument('--data-shape', type=options.positive_int, default=256)
    model.add_argument('--pretrained', default=None, help="backbone .params (GluonCV ImageNet weights)")
    model.add_argument('--resume', type=resume_value, nargs='?', const='latest', default=None, metavar='N|latest',
                       help='resume from epoch N of --prefix, or (no value, or "latest") from its newest complete '
                            'epoch; an incomplete epoch (a save cut short) is refused, one saved without optimizer '
                            'state (dist_sync) resumes with a warning')
    model.add_argument('--finetune', type=options.non_negative_int, default=None,
                       help='start from epoch N of --prefix; class predictors are re-initialised if the class count '
                            'differs')
    model.add_argument('--freeze', type=options.regex, default=None, help='regex of parameter names kept fixed')
    opt = p.add_argument_group('optimisation')
    opt.add_argument('--batch-size', type=options.positive_int, default=16, help='total over all devices')
    # defaults: the out-of-the-box synthetic run (from scratch, 15 minutes); mxnet-ssd's VOC
    # recipe with a pretrained VGG16 is --optimizer sgd --lr 0.004 --lr-factor 0.1 --max-expand 4 (see README)
    opt.add_argument('--optimizer', default='adam', choices=['sgd', 'nag', 'adam', 'rmsprop'])
    opt.add_argument('--lr', type=options.non_negative_float, default=0.004)
    opt.add_argument('--momentum', type=options.momentum, default=0.9)
    opt.add_argument('--wd', type=options.non_negative_float, default=5e-4)
    opt.add_argument('--lr-mode', default='step', choices=['step', 'cosine'],
                     help='step: multiply by --lr-factor at --lr-steps; cosine: decay to 0 by --end-epoch')
    opt.add_argument('--lr-steps', type=options.epoch_list, default='21,25',
                     help='increasing comma list of epochs where lr is multiplied by --lr-factor')
    opt.add_argument('--lr-factor', type=options.positive_float, default=0.3)
    opt.add_argument('--warmup-epochs', type=options.non_negative_float, default=1.0)
    opt.add_argument('--begin-epoch', type=options.non_negative_int, default=0)
    opt.add_argument('--end-epoch', type=options.positive_int, default=28)
    opt.add_argument('--seed', type=int, default=233)
    opt.add_argument('--min-neg-samples', type=options.non_negative_int, default=symbols.ssd.EMPTY_IMAGE_NEGATIVES,
                     help='hard negatives (class 0) taken from each image without objects (0: such images '
                          'add nothing to the loss, as with the native MultiBoxTarget on CPU)')
    dev = options.add_device_options(p.add_argument_group('devices'))
    dev.add_argument('--kv-store', default='local', choices=['local', 'device', 'dist_sync', 'dist_async'])
    out = p.add_argument_group('output')
    out.add_argument('--prefix', type=options.checkpoint_prefix, default=os.path.join('model', 'ssd'),
                     help='checkpoint prefix')
    out.add_argument('--frequent', type=options.non_negative_int, default=20, help='log every N batches (0: never)')
    out.add_argument('--log', type=options.output_file, default=None, help='log file (default: PREFIX-train.log)')
    val = options.add_nms_options(p.add_argument_group('validation'))
    options.add_ap_options(val, 'train on objects marked difficult too (validation always ignores them, '
                                'as the VOC devkit)')
    val.add_argument('--val-interval', type=options.non_negative_int, default=5,
                     help='validate every N epochs and after the last one (0: never)')
    args = options.resolve_sets(p.parse_args(argv))
    first = next((v for v in (args.resume, args.finetune) if isinstance(v, int)), args.begin_epoch)
    if first >= args.end_epoch:  # --resume latest is checked once the newest epoch is known
        p.error(f"--end-epoch {args.end_epoch} must be after the first epoch to train ({first + 1})")
    return args


def main(argv=None):
    args = parse_args(argv)
    setup_logging(args.log or f'{args.prefix}-train.log')
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # from here on Ctrl-C saves what there is
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return engine.train(config_from_args(args))
    except KeyboardInterrupt:
        log.warning('interrupted before the first epoch ended: nothing saved')
        return 130
    except (engine.NonFiniteLoss, checkpoint.WriteError) as error:
        log.error('%s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('%s', error)
        return 2


def config_from_args(args):
    """The engine's ``TrainConfig`` from the parsed options (lists become tuples)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(engine.TrainConfig)}
    return engine.TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


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
