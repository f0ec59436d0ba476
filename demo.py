"""Detect objects in images with a trained SSD; print the detections and save annotated pictures.

    python demo.py                                   # the shipped model on examples/images/
    python demo.py photo.jpg more/ --out-dir out/    # image files and folders
    python demo.py photo.jpg --prefix model/ssd300 --epoch 240 --thresh 0.6
    python demo.py photo.jpg --prefix model/ssd300 --deploy        # the graph deploy.py wrote
    python demo.py photo.jpg --pretrained gluoncv:ssd_300_vgg16_atrous_voc

For every image it prints one line per detection (class, score, box ``[xmin, ymin, xmax, ymax]``
in pixels of the original image) and saves ``NAME_det.png`` (boxes, class names, scores) beside
the image or into ``--out-dir``. Images are decoded and resized exactly as validation does
(``ssd.data.images``, ``ssd.data.dataset``); grey, palette, RGBA (alpha dropped) and 16-bit images are
converted to 8-bit RGB. A file that is missing, not an image, truncated or corrupt, or larger than
``--max-pixels`` (checked from its header, before decoding) is reported by name and skipped, the
other images are still processed, and the exit status is then 2. Bad option values (a ``--thresh``
outside [0, 1], an ``--out-dir`` that is a file...) stop it before any work, also with status 2.
"""
from ssd import interrupts

# Ctrl-C at any moment, also while MXNet loads: one line and exit status 130, no traceback (the
# outputs are written atomically: none is left half written)
if __name__ == '__main__':
    interrupts.exit_on_ctrl_c('demo.py')

# the imports come after that handler on purpose (flake8: E402)
import argparse
import json
import logging
import os
import statistics
import sys
import time
import warnings

import mxnet as mx
from PIL import Image, UnidentifiedImageError

from ssd import checkpoint, options
from ssd.data import images
from ssd.data.annotations import read_class_names
from ssd.data.dataset import preprocess
from ssd.inference import backends, models

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = os.path.join(HERE, 'examples', 'images')
MAX_PIXELS = 64_000_000  # 8000 x 8000; decoding alone would take ~200 MB of memory per image
OUTPUT_SUFFIX = '_det.png'
log = logging.getLogger('demo')


ImageError = images.UnreadableImage  # an image that cannot be used; the message starts with its path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('images', nargs='*', help='image files or folders (default: examples/images)')
    model = p.add_argument_group('model')
    model.add_argument('--prefix', default=None, help='checkpoint prefix (default: the shipped models/ssd_synthetic)')
    model.add_argument('--epoch', type=options.epoch_name, default=str(options.SHIPPED_EPOCH),
                       help=f"epoch number or 'best' (default: {options.SHIPPED_EPOCH})")
    model.add_argument('--network', default=None, help='default: from the checkpoint')
    model.add_argument('--data-shape', type=options.positive_int, default=None,
                       help='input size (default: from the checkpoint)')
    model.add_argument('--class-names', default=None, help='comma list or file (default: from the checkpoint)')
    model.add_argument('--deploy', action='store_true', help="run the graph deploy.py wrote: PREFIX-deploy-*")
    model.add_argument('--pretrained', default=None, metavar='gluoncv:NAME',
                       help='GluonCV weights: gluoncv:ssd_300_vgg16_atrous_voc or gluoncv:ssd_512_vgg16_atrous_voc')
    model.add_argument('--backend', choices=backends.BACKENDS, default='auto',
                       help='mxnet, or the ONNX export run by onnxruntime/openvino (default auto: the fastest installed)')
    model.add_argument('--onnx', default=None, metavar='FILE',
                       help='ONNX file to run (default: exported on first use, cached beside the checkpoint)')
    nms = options.add_nms_options(p.add_argument_group(
        f'detection (default: {options.NMS_THRESH}, class-wise, top {options.NMS_TOPK}; baked into a --deploy graph)'),
        defaults=False)
    nms.add_argument('--thresh', type=options.probability, default=0.5, help='lowest score printed and drawn')
    dev = p.add_mutually_exclusive_group()
    dev.add_argument('--gpu', type=int, default=None, metavar='N', help='run on GPU N')
    dev.add_argument('--cpu', action='store_true', help='run on the CPU (the default)')
    out = p.add_argument_group('output')
    out.add_argument('--out-dir', type=options.output_folder, default=None,
                     help='where NAME_det.png go (default: beside each image)')
    out.add_argument('--json', type=options.output_file, default=None, metavar='FILE',
                     help='also write all detections as JSON')
    out.add_argument('--show', action='store_true', help='open a window per image when a display exists')
    out.add_argument('--timer', action='store_true', help='print load, first-image and per-image times')
    out.add_argument('--max-pixels', type=options.positive_int, default=MAX_PIXELS,
                     help='largest image accepted (width x height)')
    return p.parse_intermixed_args(argv)  # images may come before and after options


def onnx_cache_prefix(args):
    """Where the ONNX export of the model is cached: beside its checkpoint (none for --pretrained)."""
    if args.pretrained:
        return None
    prefix = args.prefix or options.SHIPPED_PREFIX
    return f'{prefix}-deploy' if args.deploy else f'{prefix}-{args.epoch}'


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format='%(message)s', stream=sys.stderr)
    args = parse_args(argv)
    try:
        ctx = device(args.gpu)
        paths, failures = list_images(args.images or [os.path.relpath(SAMPLES)])
        started = time.perf_counter()
        model = load_model(args)
        detector = backends.make_detector(args.backend, model.symbol, model.arg_params, model.aux_params,
                                          model.data_shape, 1, [ctx], onnx_cache_prefix(args), args.onnx)
    except checkpoint.WriteError as error:  # the ONNX file cached beside the checkpoint
        log.error('error: %s', error)
        return 1
    except (ValueError, FileNotFoundError) as error:
        log.error('error: %s', error)
        return 2
    print(f"model: {models.describe(model)}")
    if args.timer:
        print(f"time: model loaded in {time.perf_counter() - started:.2f} s")
    records, times, failures, skipped = run(detector, model, paths, args, failures)
    if args.timer and times:
        report_times(times)
    if args.json:
        try:
            checkpoint.atomic_write(args.json, lambda path: _dump(path, records))
        except OSError as error:
            failures.append(f"--json {args.json}: cannot write ({error.strerror or error})")
    for message in failures:
        log.error('error: %s', message)
    if skipped:
        log.error('error: %d of %d images skipped (named above), %d processed', skipped, len(paths),
                  len(paths) - skipped)
    return 2 if failures else 0


def device(gpu):
    if gpu is None:
        return mx.cpu()
    count = mx.context.num_gpus()
    if not 0 <= gpu < count:
        raise ValueError(f"--gpu {gpu}: this machine (and MXNet build) has {count} GPU(s); use --cpu")
    return mx.gpu(gpu)


def list_images(arguments):
    """``(paths, problems)``: files as given, folders expanded to their images (sorted, without
    this script's ``*_det.png`` outputs); a folder without images is a problem."""
    paths, problems = [], []
    for argument in arguments:
        if not os.path.isdir(argument):
            paths.append(argument)
            continue
        found = images.folder_images(argument, skip_suffix=OUTPUT_SUFFIX)
        if not found:
            problems.append(f"{argument}: no images ({', '.join(images.EXTENSIONS)}) in this folder")
        paths += found
    return paths, problems


def load_model(args):
    class_names = read_class_names(args.class_names)
    nms = {key: value for key, value in (('nms_thresh', args.nms), ('force_suppress', args.force_nms),
                                         ('nms_topk', args.nms_topk)) if value is not None}
    if args.pretrained:
        given = [flag for flag, value in (('--network', args.network), ('--data-shape', args.data_shape),
                                          ('--class-names', class_names), ('--deploy', args.deploy),
                                          ('--prefix', args.prefix)) if value]
        if given:
            raise ValueError(f"--pretrained fixes the network, input size and classes: drop {', '.join(given)}")
        source, _, name = args.pretrained.partition(':')
        if source != 'gluoncv' or not name:
            raise ValueError(f"--pretrained expects gluoncv:NAME (e.g. gluoncv:ssd_300_vgg16_atrous_voc), "
                             f"got {args.pretrained!r}")
        return models.from_gluoncv(name, nms)
    prefix = args.prefix or options.SHIPPED_PREFIX
    if args.deploy:
        if nms or args.network:
            raise ValueError("--nms/--force-nms/--nms-topk/--network are baked into a --deploy graph; "
                             "write a new one with deploy.py to change them")
        return models.from_deploy(prefix, args.data_shape, class_names)
    try:
        return models.from_checkpoint(prefix, args.epoch, args.network, args.data_shape, class_names, nms)
    except FileNotFoundError as error:
        if args.prefix is None:
            raise FileNotFoundError(f"{error}. The repository ships this model; train one with `python "
                                    f"train.py --prefix models/ssd_synthetic` or pass --prefix/--epoch") from error
        raise


def run(detector, model, paths, args, failures):
    """Detect, print and draw every image; returns (records, per-image times, failure messages,
    count of images skipped as unreadable)."""
    records, times, outputs, skipped = [], [], set(), 0
    for path in paths:
        start = time.perf_counter()
        try:
            image = read_image(path, args.max_pixels)
        except ImageError as error:
            failures.append(str(error))
            skipped += 1
            continue
        detections = detect(detector, image, model, args.thresh)
        times.append(time.perf_counter() - start)
        print_detections(path, image, detections, times[-1] if args.timer else None)
        records += [{'image': path, **d} for d in detections]
        target = output_path(path, args.out_dir, outputs)
        try:
            checkpoint.atomic_write(target, lambda temporary: draw(image.asnumpy(), detections, temporary))
        except OSError as error:  # e.g. a read-only folder beside the image: the next images still run
            failures.append(f"{path}: cannot write {target} ({error.strerror or error})")
            continue
        print(f"  saved {target}")
        if args.show:
            show(target)
    return records, times, failures, skipped


def read_image(path, max_pixels=MAX_PIXELS):
    """HWC uint8 RGB NDArray of ``path``, decoded and checked as validation decodes (``ssd.data.images``:
    3 channels, grey repeated, alpha dropped, 16-bit scaled to 8; truncated files refused). The
    size is read from the header first, so an image above ``max_pixels`` is refused before any
    pixel is decoded."""
    if not os.path.isfile(path):
        raise ImageError(f"{path}: {'not a file' if os.path.exists(path) else 'no such file'}")
    width, height = image_size(path)
    if width * height > max_pixels:
        raise ImageError(f"{path}: {width}x{height} pixels is above the limit of {max_pixels} "
                         f"(--max-pixels); scale the image down")
    return images.read_image(path)


def image_size(path):
    """(width, height) from the file's header (Pillow reads no pixels for this)."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return image.size
        except Image.DecompressionBombError as error:
            raise ImageError(f"{path}: too large, refused before decoding ({error})") from error
        except UnidentifiedImageError as error:
            raise ImageError(f"{path}: not an image (unknown format)") from error
        except OSError as error:
            raise ImageError(f"{path}: cannot be read as an image ({error})") from error


def detect(detector, image, model, thresh):
    """Detections of one HWC RGB image above ``thresh``, boxes in its pixels (see ``to_records``)."""
    rows = detector.detect(preprocess(image, model.data_shape).expand_dims(0))[0]
    return to_records(rows, image.shape[1], image.shape[0], model.class_names, thresh)


def to_records(rows, width, height, class_names, thresh):
    """``{'class', 'class_id', 'score', 'box'}`` of the (N, 6) detection rows with a class and a
    score >= ``thresh``; ``box`` ``[xmin, ymin, xmax, ymax]`` scaled from the network's normalised
    corners to the ``width`` x ``height`` original (the network input is the whole image, resized)."""
    records = []
    for class_id, score, xmin, ymin, xmax, ymax in rows:
        if class_id < 0 or score < thresh:
            continue
        records.append({'class': class_names[int(class_id)], 'class_id': int(class_id), 'score': float(score),
                        'box': [float(xmin * width), float(ymin * height), float(xmax * width),
                                float(ymax * height)]})
    return records


def print_detections(path, image, detections, seconds):
    height, width = image.shape[:2]
    timing = f" in {seconds * 1000:.0f} ms" if seconds is not None else ''
    print(f"{path}: {width}x{height}, {len(detections)} detection(s){timing}")
    for d in detections:
        print(f"  {d['class']:<14} {d['score']:.3f}  [{', '.join(f'{v:7.1f}' for v in d['box'])}]")


def output_path(path, out_dir, used):
    """``NAME_det.png`` beside ``path`` or in ``out_dir``; a name already written in this run gets a number."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = out_dir if out_dir is not None else os.path.dirname(path)
    target, count = os.path.join(folder, stem + OUTPUT_SUFFIX), 1
    while target in used:
        count += 1
        target = os.path.join(folder, f"{stem}_{count}{OUTPUT_SUFFIX}")
    used.add(target)
    return target


def draw(image, detections, path):
    """Save ``image`` (HWC RGB uint8) at its own size with the boxes, class names and scores (Agg)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle
    height, width = image.shape[:2]
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.imshow(image, interpolation='nearest')
    axes.set_axis_off()
    colours = matplotlib.colormaps['tab10']
    font = max(6, min(12, width / 40))
    for d in detections:
        xmin, ymin, xmax, ymax = d['box']
        colour = colours(d['class_id'] % 10)
        axes.add_patch(Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False, edgecolor=colour,
                                 linewidth=2))
        above = ymin > 2 * font  # otherwise the label goes inside the box
        axes.text(xmin, ymin, f"{d['class']} {d['score']:.2f}", fontsize=font, color='white',
                  va='bottom' if above else 'top', bbox={'facecolor': colour, 'alpha': 0.8, 'pad': 1,
                                                         'edgecolor': 'none'})
    figure.savefig(path, format='png', dpi=100)


def show(path):
    """Show a saved picture in a window, when there is a display to open it on."""
    if not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY') or sys.platform in ('darwin', 'win32')):
        print("  --show: no display found; see the saved picture instead")
        return
    import matplotlib.pyplot as plt
    plt.imshow(plt.imread(path))
    plt.axis('off')
    plt.show()


def report_times(times):
    rest = times[1:]
    steady = f"; then {statistics.median(rest) * 1000:.0f} ms per image (median of {len(rest)})" if rest else ''
    print(f"time: first image {times[0] * 1000:.0f} ms (includes MXNet's warm-up){steady}")


def _dump(path, value):
    with open(path, 'w') as f:
        json.dump(value, f, indent=1)


if __name__ == '__main__':
    sys.exit(main())
