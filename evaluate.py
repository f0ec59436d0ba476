"""Evaluate a trained SSD checkpoint: per-class AP and mAP (VOC), or COCO AP.

    python evaluate.py --dataset voc --data-root ~/data/VOCdevkit --val-sets 2007_test \\
        --network vgg16_reduced --data-shape 300 --prefix model/ssd --epoch 240

Uses the same inference graph, NMS and AP code as the validation inside train.py.
``--save-detections FILE`` writes a JSON list of ``{"image", "class", "score", "box"}`` with
boxes ``[xmin, ymin, xmax, ymax]`` in pixels of the original image.
"""
import argparse
import json
import logging
import sys

import mxnet as mx

import symbols
from ssd import backends, checkpoint
from ssd.annotations import read_class_names
from ssd.dataset import DetectionDataset, EpochSampler, label_width
from ssd.evaluation import VOCEvaluator, coco_ap, format_ap_table
from ssd.inference import contexts, evaluate_loader
from ssd.sources import DataSpec, open_split, report_problems

DEFAULT_SETS = {'synthetic': '2007_test', 'voc': '2007_test', 'coco': 'val2017', 'rec': ''}
log = logging.getLogger('evaluate')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--dataset', choices=['synthetic', 'voc', 'coco', 'rec'], default='synthetic')
    p.add_argument('--data-root', default=None)
    p.add_argument('--val-sets', default=None, help='voc: 2007_test; coco: val2017')
    p.add_argument('--val-path', default=None, help='.rec file (--dataset rec)')
    p.add_argument('--class-names', default=None, help='comma list or file; default: from the checkpoint')
    p.add_argument('--num-class', type=int, default=None)
    p.add_argument('--network', default=None, help='default: from the checkpoint')
    p.add_argument('--data-shape', type=int, default=None, help='default: from the checkpoint')
    p.add_argument('--prefix', default='model/ssd')
    p.add_argument('--epoch', default=None, help="epoch number or 'best' (default: the latest)")
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--num-workers', type=int, default=2)
    p.add_argument('--gpus', default='')
    p.add_argument('--num-cpu-contexts', type=int, default=1)
    p.add_argument('--backend', choices=backends.BACKENDS, default='auto',
                   help='mxnet, or the ONNX export run by onnxruntime/openvino (default auto: the fastest installed)')
    p.add_argument('--onnx', default=None, metavar='FILE',
                   help='ONNX file to run (default: exported on first use, cached beside the checkpoint)')
    p.add_argument('--nms', type=float, default=0.45)
    p.add_argument('--nms-topk', type=int, default=400)
    p.add_argument('--force-nms', dest='force_nms', action='store_true')
    p.add_argument('--no-force-nms', dest='force_nms', action='store_false')
    p.add_argument('--overlap', type=float, default=0.5)
    p.add_argument('--voc07', dest='voc07', action='store_true')
    p.add_argument('--no-voc07', dest='voc07', action='store_false')
    p.add_argument('--use-difficult', dest='use_difficult', action='store_true')
    p.add_argument('--no-use-difficult', dest='use_difficult', action='store_false')
    p.add_argument('--save-detections', default=None, help='JSON file of all detections')
    p.set_defaults(voc07=True, use_difficult=False, force_nms=False)
    args = p.parse_args(argv)
    args.val_sets = [s for s in (args.val_sets or DEFAULT_SETS[args.dataset]).split(',') if s]
    if args.dataset == 'coco' and len(args.val_sets) > 1:  # COCO AP is scored against one json file
        p.error(f"--dataset coco evaluates one split at a time, got --val-sets {','.join(args.val_sets)}")
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
    args = parse_args(argv)
    try:
        evaluate(args)
    except (ValueError, FileNotFoundError) as error:
        log.error('%s', error)
        return 2
    return 0


def evaluate(args):
    arg, aux, info = checkpoint.load_trained(args.prefix, args.epoch)
    network = args.network or info.get('network')
    data_shape = args.data_shape or info.get('data_shape')
    if network is None or data_shape is None:
        raise ValueError('--network and --data-shape are needed (the checkpoint does not record them)')
    class_names = read_class_names(args.class_names) or info.get('class_names')
    split = open_split(DataSpec(args.dataset, args.data_root, args.val_sets, args.val_path, class_names,
                                args.num_class, args.use_difficult))
    report_problems(split.problems, log)
    class_names = split.class_names
    width = label_width(split.source)
    dataset = DetectionDataset(split.source, data_shape, width, train=False)
    loader = mx.gluon.data.DataLoader(
        dataset, batch_sampler=mx.gluon.data.BatchSampler(EpochSampler(len(dataset), False), args.batch_size, 'keep'),
        num_workers=args.num_workers)
    symbol = symbols.get_symbol(network, len(class_names), data_shape, nms_thresh=args.nms,
                                force_suppress=args.force_nms, nms_topk=args.nms_topk)
    detector = backends.make_detector(args.backend, symbol, arg, aux, data_shape, args.batch_size,
                                      contexts(args.gpus, args.num_cpu_contexts),
                                      f'{args.prefix}-{args.epoch or "latest"}', args.onnx)
    saved = []
    on_batch = (lambda d, l, m: saved.extend(to_records(d, m, split.source, class_names))) \
        if (args.save_detections or split.coco_annotations) else None
    summary = evaluate_loader(detector, loader, VOCEvaluator(class_names, args.voc07, args.overlap), on_batch)
    print(f"{'VOC07 11-point' if args.voc07 else 'area-based'} AP at IoU {args.overlap}, "
          f"{len(dataset)} images:")
    print(format_ap_table(summary))
    if split.coco_annotations:
        stats = coco_ap(split.coco_annotations, to_coco(saved, split.coco_annotations))
        print(f"COCO AP {stats[0]:.4f}  AP50 {stats[1]:.4f}  AP75 {stats[2]:.4f}")
    if args.save_detections:
        checkpoint.atomic_write(args.save_detections, lambda path: _dump(path, saved))
        print(f"saved {len(saved)} detections to {args.save_detections}")
    return summary


def to_records(detections, meta, source, class_names):
    """JSON-ready detections of one batch, boxes in pixels of the original images."""
    records = []
    for rows, (index, width, height, _) in zip(detections, meta):
        image = image_id(source, int(index))
        for class_id, score, xmin, ymin, xmax, ymax in rows[rows[:, 0] >= 0]:
            records.append({'image': image, 'class': class_names[int(class_id)], 'score': float(score),
                            'box': [float(xmin * width), float(ymin * height), float(xmax * width),
                                    float(ymax * height)]})
    return records


def image_id(source, index):
    records = getattr(source, 'records', None)
    return records[index].image_id if records is not None else index


def to_coco(records, annotation_file):
    """pycocotools detections ([x, y, w, h] boxes); category ids looked up by name in the annotations."""
    with open(annotation_file) as f:
        categories = {c['name']: c['id'] for c in json.load(f)['categories']}
    return [{'image_id': r['image'], 'category_id': categories[r['class']], 'score': r['score'],
             'bbox': [r['box'][0], r['box'][1], r['box'][2] - r['box'][0], r['box'][3] - r['box'][1]]}
            for r in records]


def _dump(path, value):
    with open(path, 'w') as f:
        json.dump(value, f)


if __name__ == '__main__':
    sys.exit(main())
