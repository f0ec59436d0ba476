"""Pack VOC or COCO images and labels into mxnet-ssd's RecordIO format (.lst, .rec, .idx).

    python tools/prepare_dataset.py --dataset voc --data-root ~/data/VOCdevkit \\
        --sets 2007_trainval,2012_trainval --target data/train
    python train.py --dataset rec --train-path data/train.rec --val-path data/val.rec --class-names ...

Labels are packed as ``[2, 6, cls, xmin, ymin, xmax, ymax, difficult, ...]`` with normalized
corners (the label width is computed by train.py from the data, nothing to configure).
Background-only images are kept (they train as negatives). Annotation problems are reported
with their file names and the affected objects or images are left out.
"""
import argparse
import os
import sys

from ssd.data.annotations import load_coco, load_voc, read_class_names  # the installed package (pip install -e .)
from ssd.data.records import write_record_file
from ssd.data.sources import VOC_CLASSES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', choices=['voc', 'coco'], required=True)
    p.add_argument('--data-root', required=True, help='VOCdevkit folder or COCO root')
    p.add_argument('--sets', required=True, help='voc: 2007_trainval,2012_trainval; coco: train2017')
    p.add_argument('--class-names', default=None, help='comma list or file (a subset is allowed)')
    p.add_argument('--target', required=True, help='output prefix: writes TARGET.lst, .rec, .idx')
    # Packs difficult objects with their flag by default: train.py drops them unless --use-difficult
    # (as it does reading VOC XML) and evaluate.py ignores them when scoring, so one .rec serves both.
    p.add_argument('--use-difficult', dest='use_difficult', action='store_true',
                   help='pack objects marked difficult, flagged (default)')
    p.add_argument('--no-use-difficult', dest='use_difficult', action='store_false',
                   help='leave them out of the .rec altogether')
    p.set_defaults(use_difficult=True)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    names = read_class_names(args.class_names)
    sets = [s for s in args.sets.split(',') if s]
    try:
        if args.dataset == 'voc':
            records, problems = load_voc(args.data_root, sets, names or list(VOC_CLASSES), args.use_difficult)
        else:
            records, problems = [], []
            for split in sets:
                part, part_problems, names = load_coco(args.data_root, split, names)
                records, problems = records + part, problems + part_problems
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"skipped: {problem.path}: {problem.message}", file=sys.stderr)
    os.makedirs(os.path.dirname(os.path.abspath(args.target)), exist_ok=True)
    written, unreadable = write_record_file(records, args.target, args.data_root)
    for path, message in unreadable:
        print(f"skipped: {path}: {message}", file=sys.stderr)
    widest = max([len(r.label) for r in records] or [0])
    print(f"wrote {written} images to {args.target}.rec (most objects in one image: {widest}; "
          f"{len(problems) + len(unreadable)} problems)")
    return 0 if written else 1


if __name__ == '__main__':
    sys.exit(main())
