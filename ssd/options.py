"""Command-line options shared by train.py, evaluate.py, demo.py and deploy.py, with their defaults.

The defaults are written here once: data sets per dataset, NMS (``symbols.ssd.NMS_THRESH`` /
``NMS_TOPK``, class-wise), the AP rules (VOC07 11-point at IoU 0.5), difficult objects (left
out of training, ignored by the scorer, as the VOC devkit does) and devices (CPU).

Every numeric option is checked while argparse reads it: the checkers below are argparse
``type`` callables, so a bad value stops the script at once with exit status 2 and
``error: argument --lr: expected a finite number >= 0, got nan``, before any data or model is
loaded. NaN fails every range check (all comparisons with NaN are false).
"""
import argparse
import math
import os
import re

import mxnet as mx

from symbols.ssd import NMS_THRESH, NMS_TOPK

__all__ = ['SHIPPED_PREFIX', 'SHIPPED_EPOCH', 'DEFAULT_SETS', 'DATASETS', 'NMS_THRESH', 'NMS_TOPK', 'USE_DIFFICULT', 'probability',
           'positive_int', 'non_negative_int', 'top_k', 'non_negative_float', 'positive_float',
           'momentum', 'zoom', 'epoch_list', 'gpu_list', 'regex', 'epoch_name', 'output_file',
           'output_folder', 'checkpoint_prefix', 'OPSETS', 'onnx_opset', 'add_data_options', 'resolve_sets', 'add_nms_options',
           'add_ap_options', 'add_device_options']

#: ONNX opsets supported: mx2onnx's converters target 13 (its opset-12 output fails its own
#: final check, which uses the newest opset's schemas); 14-17 changed the semantics of none of
#: the operators emitted (13, 15 and 17 were checked), 18 changed Reduce*/Pad/Split inputs.
OPSETS = range(13, 18)

# The model in models/: the last epoch of `python train.py` with its defaults (the README's figures)
SHIPPED_PREFIX = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'models', 'ssd_synthetic')
SHIPPED_EPOCH = 28

# (training sets, validation sets) of each --dataset; 'rec' reads --train-path / --val-path instead
DEFAULT_SETS = {'synthetic': ('2007_trainval', '2007_test'), 'voc': ('2007_trainval,2012_trainval', '2007_test'),
                'coco': ('train2017', 'val2017'), 'rec': ('', '')}
DATASETS = tuple(DEFAULT_SETS)
# Objects marked difficult: not trained on, and ignored by the scorer, unless --use-difficult.
# Validation data always keeps them, flagged, whatever the source (VOC XML, COCO json, .rec).
USE_DIFFICULT = False


def _checked(kind, expected, accept):
    """An argparse type: ``kind(text)`` if ``accept`` takes it, else an error saying what was expected."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    parse.__name__ = expected  # argparse names the type in some of its own messages
    return parse


probability = _checked(float, 'a number from 0 to 1', lambda v: 0 <= v <= 1)
positive_int = _checked(int, 'an integer >= 1', lambda v: v >= 1)
non_negative_int = _checked(int, 'an integer >= 0', lambda v: v >= 0)
top_k = _checked(int, 'an integer >= 1, or -1 for no limit', lambda v: v >= 1 or v == -1)
non_negative_float = _checked(float, 'a finite number >= 0', lambda v: 0 <= v < math.inf)
positive_float = _checked(float, 'a finite number > 0', lambda v: 0 < v < math.inf)
momentum = _checked(float, 'a number from 0 to below 1', lambda v: 0 <= v < 1)
zoom = _checked(float, 'a finite number >= 1 (1: no zoom-out)', lambda v: 1 <= v < math.inf)


def epoch_list(text):
    """``'15,18'`` -> ``[15, 18]``: epochs >= 1 in increasing order (empty: none)."""
    parts = [part.strip() for part in text.split(',') if part.strip()]
    if not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"expected a comma list of epochs >= 1, got {text!r}")
    epochs = [int(part) for part in parts]
    if epochs != sorted(set(epochs)):
        raise argparse.ArgumentTypeError(f"expected epochs in increasing order, got {text!r}")
    return epochs


def gpu_list(text):
    """``'0,1'`` (spaces dropped) if every id is a GPU of this machine and MXNet build; ``''``: CPU."""
    ids = [part for part in text.replace(' ', '').split(',') if part]
    if not all(part.isdigit() for part in ids):
        raise argparse.ArgumentTypeError(f"expected a comma list of GPU numbers, got {text!r}")
    count = mx.context.num_gpus()
    missing = [part for part in ids if int(part) >= count]
    if missing:
        raise argparse.ArgumentTypeError(
            f"no GPU {', '.join(missing)}: this machine (and MXNet build) has {count} GPU(s); "
            f"leave --gpus empty to run on the CPU")
    return ','.join(ids)


def regex(text):
    """``text`` if it compiles as a Python regular expression."""
    try:
        re.compile(text)
    except re.error as error:
        raise argparse.ArgumentTypeError(f"not a valid regular expression {text!r}: {error}") from None
    return text


def epoch_name(text):
    """A checkpoint epoch: a number >= 0 or ``'best'`` (kept as text)."""
    if text != 'best' and not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an epoch number or 'best', got {text!r}")
    return text


def output_file(text):
    """A file path that can be written: not a folder, and below a folder (not a file) if anywhere."""
    if os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    _check_parents(text)
    return text


def checkpoint_prefix(text):
    """A checkpoint prefix to write (``model/ssd`` -> ``model/ssd-0001.params``...): a file name
    stem after the folder, and no file where a folder must be."""
    stem = os.path.basename(text)
    if stem in ('', '.', '..'):
        raise argparse.ArgumentTypeError(f"expected a folder and a file name stem such as model/ssd, got {text!r}")
    _check_parents(text)
    return text


onnx_opset = _checked(int, f'an ONNX opset from {OPSETS.start} to {OPSETS.stop - 1}', lambda v: v in OPSETS)


def output_folder(text):
    """A folder path that exists or can be made: not a file, and nothing above it a file."""
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    _check_parents(text)
    return text


def _check_parents(path):
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {path}: {parent} is a file, not a folder")


def add_data_options(parser, training, class_names_help='comma list, or a file with one name per line'):
    """--dataset, --data-root, the sets or .rec paths, --class-names, --num-class, --num-workers."""
    group = parser.add_argument_group('data')
    group.add_argument('--dataset', choices=DATASETS, default='synthetic')
    group.add_argument('--data-root', default=None, help='VOCdevkit folder (voc), COCO root (coco), '
                       'or where to generate the synthetic set (default: ~/.cache/multibox/synthetic)')
    if training:
        group.add_argument('--train-sets', default=None, help='voc: 2007_trainval,2012_trainval; coco: train2017')
        group.add_argument('--train-path', default=None, help='training .rec (--dataset rec)')
    group.add_argument('--val-sets', default=None, help='voc: 2007_test; coco: val2017')
    group.add_argument('--val-path', default=None, help='validation .rec (--dataset rec)')
    group.add_argument('--class-names', default=None, help=class_names_help)
    group.add_argument('--num-class', type=positive_int, default=None, help='number of object classes (checked)')
    group.add_argument('--num-workers', type=non_negative_int, default=2, help='data loading processes (0: in process)')
    return group


def resolve_sets(args):
    """Replace ``args.train_sets`` / ``args.val_sets`` (comma text or None) by lists, defaults filled in."""
    train_default, val_default = DEFAULT_SETS[args.dataset]
    if hasattr(args, 'train_sets'):
        args.train_sets = [s for s in (args.train_sets or train_default).split(',') if s]
    args.val_sets = [s for s in (args.val_sets or val_default).split(',') if s]
    return args


def add_nms_options(group, defaults=True):
    """--nms, --nms-topk, --force-nms / --no-force-nms; ``defaults=False`` leaves them None (not given)."""
    group.add_argument('--nms', type=probability, default=NMS_THRESH if defaults else None,
                       help=f'NMS IoU threshold (default: {NMS_THRESH})')
    group.add_argument('--nms-topk', type=top_k, default=NMS_TOPK if defaults else None,
                       help=f'boxes kept before NMS (default: {NMS_TOPK}; -1: all)')
    group.add_argument('--force-nms', dest='force_nms', action='store_true', default=False if defaults else None,
                       help='NMS across classes (default: class-wise)')
    group.add_argument('--no-force-nms', dest='force_nms', action='store_false', help='class-wise NMS')
    return group


def add_ap_options(group, difficult_help):
    """--overlap, --voc07 / --no-voc07, --use-difficult / --no-use-difficult (default USE_DIFFICULT)."""
    group.add_argument('--overlap', type=probability, default=0.5, help='IoU of a true positive (default: 0.5)')
    group.add_argument('--voc07', dest='voc07', action='store_true', default=True,
                       help='11-point VOC07 AP (default)')
    group.add_argument('--no-voc07', dest='voc07', action='store_false', help='area-based AP')
    group.add_argument('--use-difficult', dest='use_difficult', action='store_true', default=USE_DIFFICULT,
                       help=difficult_help)
    group.add_argument('--no-use-difficult', dest='use_difficult', action='store_false')
    return group


def add_device_options(group):
    """--gpus (checked against the GPUs MXNet sees) and --num-cpu-contexts."""
    group.add_argument('--gpus', type=gpu_list, default='', help='comma list of GPU ids; empty: CPU')
    group.add_argument('--num-cpu-contexts', type=positive_int, default=1,
                       help='data-parallel CPU contexts when --gpus is empty')
    return group
