"""Write an SSD's inference graph for deployment: box decoding and NMS baked in, no training nodes.

    python deploy.py --network mobilenet0.25 --data-shape 256 --prefix models/ssd_synthetic --epoch 28
    python deploy.py --prefix model/ssd300 --epoch 240 --nms 0.5 --nms-topk 200 --force-nms --onnx ssd300.onnx

Writes, atomically, ``PREFIX-deploy-symbol.json`` and ``PREFIX-deploy-0000.params`` (MXNet's
checkpoint names; the graph is made of MXNet's standard operators only, so plain MXNet runs it
without this package, e.g. ``mx.mod.Module`` or ``gluon.SymbolBlock.imports``), and
``PREFIX-deploy-0000.json`` (network, data shape, class names, NMS settings; ``demo.py --deploy``
reads it). ``--network``, ``--data-shape`` and ``--class-names`` default to the checkpoint's
JSON sidecar.

The graph's input ``data`` is (B, 3, S, S): the image resized to S x S (aspect ratio not kept,
bilinear), RGB pixels minus the mean pixel (123.675, 116.28, 103.53). Its output is (B, N, 6),
rows ``[class_id, score, xmin, ymin, xmax, ymax]`` with corners normalised to [0, 1] (multiply by
the original width/height) and ``class_id`` -1 for suppressed or empty rows.

``--onnx FILE`` also exports the graph to ONNX with ``ssd.export.onnx`` (exit status 1 when that
fails; the MXNet files are written first), NMS as ONNX NonMaxSuppression unless ``--onnx-nms
exact`` asks for the Loop that keeps MXNet's order among tied scores; its batch axis is symbolic (any batch size) unless
``--batch-size`` fixes it. ``--int8 FOLDER`` makes that file an INT8 model instead
(``ssd.export.quantization``: convolutions in INT8, calibrated on the images of FOLDER).
"""
from ssd import interrupts

# Ctrl-C at any moment, also while MXNet loads: one line and exit status 130, no traceback (the
# outputs are written atomically: none is left half written)
if __name__ == '__main__':
    interrupts.exit_on_ctrl_c('deploy.py')

# the imports come after that handler on purpose (flake8: E402)
import argparse
import logging
import os
import sys
import tempfile

from ssd import checkpoint, options
from ssd.data import images
from ssd.data.annotations import read_class_names
from ssd.inference import models

log = logging.getLogger('deploy')
CALIBRATION_IMAGES = 100  # more changed the shipped model's INT8 mAP by < 0.003


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--prefix', default=options.SHIPPED_PREFIX, help='checkpoint prefix (default: the shipped model)')
    p.add_argument('--epoch', type=options.epoch_name, default=str(options.SHIPPED_EPOCH),
                   help=f"epoch number or 'best' (default: {options.SHIPPED_EPOCH})")
    p.add_argument('--network', default=None, help='default: from the checkpoint')
    p.add_argument('--data-shape', type=options.positive_int, default=None, help='default: from the checkpoint')
    p.add_argument('--class-names', default=None, help='comma list or file (default: from the checkpoint)')
    p.add_argument('--num-class', type=options.positive_int, default=None, help='number of classes (checked)')
    options.add_nms_options(p.add_argument_group('detection baked into the graph'))
    p.add_argument('--onnx', type=options.output_file, default=None, metavar='FILE',
                   help='also export to this ONNX file')
    p.add_argument('--onnx-opset', type=options.onnx_opset, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument('--onnx-nms', choices=['standard', 'exact'], default='standard',
                   help='ONNX NMS: standard NonMaxSuppression (fast) or exact Loop (MXNet tie order)')
    p.add_argument('--batch-size', type=options.positive_int, default=None,
                   help='fixed batch size of the ONNX graph (default: symbolic, any batch size)')
    p.add_argument('--int8', default=None, metavar='FOLDER',
                   help=f'write the --onnx file with INT8 convolutions, calibrated on up to {CALIBRATION_IMAGES} '
                        'images of FOLDER (training images; see README for when it is faster)')
    args = p.parse_args(argv)
    if args.int8 is not None and args.onnx is None:
        p.error('--int8 needs --onnx FILE (the INT8 model is an ONNX file)')
    if args.int8 is not None and not os.path.isdir(args.int8):
        p.error(f'--int8 {args.int8}: not a folder')
    return args


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
    args = parse_args(argv)
    try:
        model = load(args)
        written = write_deploy(model, args.prefix)
    except checkpoint.WriteError as error:  # nothing of the deploy checkpoint is left half written
        log.error('error: %s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('error: %s', error)
        return 2
    print(f"deployed {models.describe(model)}")
    print(f"wrote {', '.join(written)}")
    skipped = []
    if args.onnx:
        try:
            calibration, skipped = calibration_images(args.int8, model.data_shape) if args.int8 else (None, [])
        except ValueError as error:  # an empty folder, or no image of it decodes
            log.error('error: --int8: %s', error)
            return 2
        try:
            export_onnx(model, args.onnx, args.batch_size, args.onnx_opset, args.onnx_nms, calibration)
        except Exception as error:  # the exporter's own errors: unsupported operator, missing package...
            log.error('error: ONNX export to %s failed: %s', args.onnx, error)
            return 1
        print(f"wrote {args.onnx}" + (f" (INT8, calibrated on {len(calibration)} images"
                                      f"{f'; {len(skipped)} unreadable skipped' if skipped else ''})"
                                      if args.int8 else ''))
    for message in skipped:  # named and passed over: the others calibrated
        log.error('error: --int8: skipped %s', message)
    return 2 if skipped else 0


def load(args):
    class_names = read_class_names(args.class_names)
    nms = {'nms_thresh': args.nms, 'force_suppress': args.force_nms, 'nms_topk': args.nms_topk}
    model = models.from_checkpoint(args.prefix, args.epoch, args.network, args.data_shape, class_names, nms)
    if args.num_class is not None and args.num_class != len(model.class_names):
        raise ValueError(f"--num-class {args.num_class} does not match the {len(model.class_names)} "
                         f"class names {model.class_names}")
    return model


def write_deploy(model, prefix):
    """``PREFIX-deploy-symbol.json``, ``-0000.params`` and ``-0000.json``; returns their paths."""
    target = models.deploy_prefix(prefix)
    info = {key: model.info[key] for key in ('network', 'data_shape', 'class_names', 'nms_threshold',
                                             'force_suppress', 'nms_topk', 'source')}
    checkpoint.save(target, 0, model.symbol, model.arg_params, model.aux_params, extra=info)
    return [f'{target}-symbol.json', checkpoint.params_path(target, 0), f'{target}-0000.json']


def export_onnx(model, path, batch_size, opset=None, nms='standard', calibration=None):
    """``ssd.export.onnx.export_onnx`` (which writes atomically) on the deploy graph; with
    ``calibration`` inputs, the float export goes to a temporary file and ``path`` gets its
    INT8 version (``ssd.export.quantization``)."""
    from ssd.export.onnx import export_onnx as export  # needs the optional onnx package: only when asked
    options = {'nms': nms} if opset is None else {'opset': opset, 'nms': nms}
    if calibration is None:
        export(model.symbol, model.arg_params, model.aux_params, model.data_shape, batch_size, path, **options)
        return
    from ssd.export.quantization import quantize_onnx
    with tempfile.TemporaryDirectory() as folder:
        float_path = export(model.symbol, model.arg_params, model.aux_params, model.data_shape, batch_size,
                            os.path.join(folder, 'float.onnx'), **options)
        checkpoint.atomic_write(path, lambda temporary: quantize_onnx(float_path, temporary, calibration))


def calibration_images(folder, data_shape):
    """``(inputs, skipped)``: the network inputs of the first ``CALIBRATION_IMAGES`` images of
    ``folder`` that decode, and a message naming each one that does not (passed over)."""
    from ssd.export.quantization import readable_inputs
    paths = images.folder_images(folder)
    if not paths:
        raise ValueError(f"{folder} holds no images ({', '.join(images.EXTENSIONS)})")
    inputs, skipped = readable_inputs(paths, data_shape, CALIBRATION_IMAGES)
    if not len(inputs):
        raise ValueError(f"none of the {len(paths)} images of {folder} can be decoded (last: {skipped[-1]})")
    return inputs, skipped


if __name__ == '__main__':
    sys.exit(main())
