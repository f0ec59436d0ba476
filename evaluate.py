"""Evaluate a trained SSD checkpoint: per-class AP and mAP (VOC), or COCO AP.

    python evaluate.py --dataset voc --data-root ~/data/VOCdevkit --val-sets 2007_test \\
        --network vgg16_reduced --data-shape 300 --prefix model/ssd --epoch 240

Uses the same inference graph, NMS and AP code as the validation inside train.py: VOC AP by
the devkit's rules, in pixels of the original images (``ssd.inference.evaluation``). ``--save-detections
FILE`` writes a JSON list of ``{"image", "set", "class", "score", "box"}`` (the dataset's own
image ids, boxes ``[xmin, ymin, xmax, ymax]`` in pixels); ``--results-dir DIR`` writes the VOC
devkit's ``comp4_det_<split>_<class>.txt`` files, or COCO's results JSON for ``--dataset coco``;
a precision-recall plot per class goes beside them (``--pr-plot``).
"""
from ssd import interrupts

# Ctrl-C at any moment, also while MXNet loads: one line and exit status 130, no traceback (the
# outputs are written atomically: none is left half written)
if __name__ == '__main__':
    interrupts.exit_on_ctrl_c('evaluate.py')

# the imports come after that handler on purpose (flake8: E402)
import argparse
import logging
import os
import sys

import mxnet as mx

from ssd import checkpoint, options
from ssd.data.annotations import read_class_names
from ssd.data.dataset import DetectionDataset, EpochSampler, label_width
from ssd.data.sources import DataSpec, open_split, report_problems
from ssd.inference import backends, models, results
from ssd.inference.detector import contexts, evaluate_loader
from ssd.inference.evaluation import VOCEvaluator, coco_ap, format_ap_table

log = logging.getLogger('evaluate')


def parse_args(argv=None):
    """The command line; every value is checked here (``ssd.options``): a bad one exits 2 naming it."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_data_options(p, training=False, class_names_help='comma list or file; default: from the checkpoint')
    model = p.add_argument_group('model')
    model.add_argument('--network', default=None, help='default: from the checkpoint')
    model.add_argument('--data-shape', type=options.positive_int, default=None, help='default: from the checkpoint')
    model.add_argument('--prefix', default='model/ssd')
    model.add_argument('--epoch', type=options.epoch_name, default=None,
                       help="epoch number or 'best' (default: the latest)")
    model.add_argument('--batch-size', type=options.positive_int, default=8)
    options.add_device_options(model)
    model.add_argument('--backend', choices=backends.BACKENDS, default='auto',
                       help='mxnet, or the ONNX export run by onnxruntime/openvino (default auto: the fastest installed)')
    model.add_argument('--onnx', default=None, metavar='FILE',
                       help='ONNX file to run (default: exported on first use, cached beside the checkpoint)')
    scoring = options.add_nms_options(p.add_argument_group('detection and scoring'))
    options.add_ap_options(scoring, 'score difficult objects as ordinary ones '
                                    '(the VOC devkit ignores them: the default)')
    out = p.add_argument_group('output')
    out.add_argument('--save-detections', type=options.output_file, default=None,
                     help='JSON file of all detections (pixels, dataset image ids)')
    out.add_argument('--results-dir', type=options.output_folder, default=None,
                     help="write the VOC devkit's comp4_det_<split>_<class>.txt files (VOC) or COCO's results JSON")
    out.add_argument('--pr-plot', type=options.output_file, default=None,
                     help='precision-recall PNG (default: in --results-dir, '
                     'else PREFIX-precision_recall.png)')
    args = options.resolve_sets(p.parse_args(argv))
    if args.dataset == 'coco' and len(args.val_sets) > 1:  # COCO AP is scored against one json file
        p.error(f"--dataset coco evaluates one split at a time, got --val-sets {','.join(args.val_sets)}")
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
    args = parse_args(argv)
    try:
        evaluate(args)
    except checkpoint.WriteError as error:  # results, plot or the ONNX cache: what was written stays whole
        log.error('%s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('%s', error)
        return 2
    return 0


def evaluate(args):
    epoch = args.epoch if args.epoch is not None else checkpoint.latest_epoch(args.prefix)
    nms = {'nms_thresh': args.nms, 'force_suppress': args.force_nms, 'nms_topk': args.nms_topk}
    model = models.from_checkpoint(args.prefix, epoch, args.network, args.data_shape,
                                   read_class_names(args.class_names), nms)
    # difficult objects stay in the ground truth (flagged): the scorer ignores them as the devkit does
    split = open_split(DataSpec(args.dataset, args.data_root, args.val_sets, args.val_path, model.class_names,
                                args.num_class, use_difficult=True))
    report_problems(split.problems, log)
    class_names = split.class_names
    dataset = DetectionDataset(split.source, model.data_shape, label_width(split.source), train=False)
    if len(dataset) == 0:
        raise ValueError(f"the validation set {', '.join(args.val_sets) or args.val_path} has no images")
    loader = mx.gluon.data.DataLoader(
        dataset, batch_sampler=mx.gluon.data.BatchSampler(EpochSampler(len(dataset), False), args.batch_size, 'keep'),
        num_workers=args.num_workers)
    detector = backends.make_detector(args.backend, model.symbol, model.arg_params, model.aux_params,
                                      model.data_shape, args.batch_size, contexts(args.gpus, args.num_cpu_contexts),
                                      f'{args.prefix}-{epoch}', args.onnx)
    records = []
    evaluator = VOCEvaluator(class_names, args.voc07, args.overlap, count_difficult=args.use_difficult)
    summary, unreadable = evaluate_loader(
        detector, loader, split.source, evaluator,
        lambda index, found: records.extend(results.detection_records(split.source, index, found, class_names)))
    for index in unreadable:
        log.warning('skipped unreadable image %s (its objects are not scored)', split.source.name(index))
    kind = 'VOC07 11-point' if args.voc07 else 'area-based'
    print(f"{kind} AP at IoU {args.overlap}, in pixels, {len(dataset) - len(unreadable)} images:")
    print(format_ap_table(summary))
    coco = results.coco_results(records, split.coco_annotations) if split.coco_annotations else None
    if coco is not None:
        stats = coco_ap(split.coco_annotations, coco)
        print(f"COCO AP {stats[0]:.4f}  AP50 {stats[1]:.4f}  AP75 {stats[2]:.4f}")
    save_results(args, records, coco, evaluator, summary, f'{kind} AP, {model.info["source"]}')
    return summary


def save_results(args, records, coco, evaluator, summary, title):
    """--save-detections, --results-dir (VOC devkit or COCO files) and the precision-recall plot."""
    if args.save_detections:
        results.write_json(args.save_detections, records)
        print(f"saved {len(records)} detections to {args.save_detections}")
    if args.results_dir:
        if coco is not None:
            path = os.path.join(args.results_dir, f'detections_{args.val_sets[0]}_multibox_results.json')
            results.write_json(path, coco)
            print(f"saved COCO results to {path}")
        else:
            paths = results.write_voc_results(records, args.results_dir, evaluator.class_names)
            print(f"saved VOC devkit results to {os.path.dirname(paths[0])}/comp4_det_*.txt")
    plot = args.pr_plot or (os.path.join(args.results_dir, 'precision_recall.png') if args.results_dir
                            else f'{args.prefix}-precision_recall.png')
    results.plot_precision_recall(evaluator.curves(), summary, plot, title)
    print(f"saved the precision-recall plot to {plot}")


if __name__ == '__main__':
    sys.exit(main())
