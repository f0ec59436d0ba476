"""Pick the image source of a run from the command-line names shared by train.py and evaluate.py.

``--dataset synthetic|voc|coco|rec`` with ``--data-root``, ``--train-sets``/``--val-sets`` (VOC:
``2007_trainval``...; COCO: ``train2017``...) or ``--train-path``/``--val-path`` (RecordIO), and
``--class-names``/``--num-class``. Each source gives ``(image, pixel label)`` pairs by index.
"""
import os
from collections import namedtuple

from . import annotations, synthetic
from .dataset import FileSource
from .records import RecordSource

__all__ = ['VOC_CLASSES', 'DataSpec', 'open_split', 'report_problems', 'default_cache_dir']

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
               'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa',
               'train', 'tvmonitor')

DataSpec = namedtuple('DataSpec', 'dataset data_root sets rec_path class_names num_class use_difficult')
Split = namedtuple('Split', 'source class_names problems coco_annotations')


def default_cache_dir():
    return os.environ.get('MULTIBOX_CACHE', os.path.join(os.path.expanduser('~'), '.cache', 'multibox'))


def open_split(spec):
    """The ``Split`` (source, class names, annotation problems, COCO json or None) of ``spec``;
    a ``spec.num_class`` other than the number of class names is a ValueError."""
    split = _open(spec)
    if spec.num_class is not None and spec.num_class != len(split.class_names):
        raise ValueError(f"--num-class {spec.num_class} does not match the {len(split.class_names)} "
                         f"class names {split.class_names}")
    return split


def _open(spec):
    if spec.dataset == 'synthetic':
        root = spec.data_root or os.path.join(default_cache_dir(), 'synthetic')
        synthetic.ensure_dataset(root)
        return _voc_split(root, spec.sets, spec.class_names or list(synthetic.CLASSES), spec.use_difficult)
    if spec.dataset == 'voc':
        _require(spec.data_root, '--data-root (the VOCdevkit folder)')
        return _voc_split(spec.data_root, spec.sets, spec.class_names or list(VOC_CLASSES), spec.use_difficult)
    if spec.dataset == 'coco':
        _require(spec.data_root, '--data-root (the COCO root)')
        records, problems, names = [], [], None
        for split in spec.sets:
            part, part_problems, names = annotations.load_coco(spec.data_root, split, spec.class_names)
            records += part
            problems += part_problems
        json_file = os.path.join(spec.data_root, 'annotations', f'instances_{spec.sets[0]}.json')
        return Split(FileSource(records), names, problems, json_file)
    if spec.dataset == 'rec':
        _require(spec.rec_path, '--train-path / --val-path (a .rec file)')
        names = spec.class_names or [f'class{i}' for i in range(spec.num_class or 0)]
        if not names:
            raise ValueError("--dataset rec needs --class-names or --num-class")
        return Split(RecordSource(spec.rec_path, spec.use_difficult), names, [], None)
    raise ValueError(f"unknown dataset {spec.dataset!r}: choose synthetic, voc, coco or rec")


def _voc_split(root, sets, class_names, use_difficult):
    records, problems = annotations.load_voc(root, sets, list(class_names), use_difficult)
    return Split(FileSource(records), list(class_names), problems, None)


def _require(value, what):
    if not value:
        raise ValueError(f"this dataset needs {what}")


def report_problems(problems, log, shown=20):
    """Log the skipped annotation files of a split on ``log``, each with its path and reason."""
    for problem in problems[:shown]:
        log.warning('skipped: %s: %s', problem.path, problem.message)
    if len(problems) > shown:
        log.warning('... and %d more annotation problems', len(problems) - shown)
