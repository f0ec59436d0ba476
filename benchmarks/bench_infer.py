"""Inference speed of SSD300 on CPU: our inference graph vs GluonCV, and our ONNX export.

Both networks hold the same random weights (GluonCV's ``ssd_300_vgg16_atrous_voc`` initialised
with He-normal weights, converted to our ``vgg16_reduced`` graph by ``symbols.convert``) and see
the same images (examples/images, repeated to fill a batch; each network gets its own input
normalisation). For each batch size (1 and 8) the script measures:

- load: from a ``.params`` file on disk to a model ready to run (ours: read the checkpoint,
  build the symbol, bind a Module, set the parameters, as demo.py does; GluonCV: build the
  network, ``load_parameters``, ``hybridize(static_alloc=True, static_shape=True)``);
- first image: the first forward right after loading (oneDNN and CachedOp set-up included);
- per image: a steady forward (network, decoding, NMS, detections copied to NumPy) divided by the batch.

Loads and forwards of the models run interleaved, round after round, so a change of machine load
hits all alike; the script prints the medians and the median per-round ratios ours / GluonCV
(target: per image <= 1.0). Our graph exported by ``ssd.export.onnx`` (symbolic batch, standard
NMS) and run through ``ssd.inference.backends`` by onnxruntime and OpenVINO, when they import, add rows,
and so does its INT8 version (``deploy.py --int8``'s ``ssd.export.quantization``, calibrated on the
sample images).
No image decoding or resizing is timed.

    python benchmarks/bench_infer.py --rounds 5 --load-rounds 3
"""
import argparse
import os
import statistics
import tempfile
import time

import mxnet as mx
from gluoncv.model_zoo import get_model

import symbols
from ssd import checkpoint
from ssd.data.dataset import preprocess
from ssd.inference import backends
from ssd.inference.detector import Detector
from symbols import convert

SHAPE, NAME = 300, 'ssd_300_vgg16_atrous_voc'
GLUONCV_STD = (0.229, 0.224, 0.225)
SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'examples', 'images')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--rounds', type=int, default=5, help='timed steady forwards per model and batch size')
    p.add_argument('--load-rounds', type=int, default=3, help='timed loads (+ first image) per model and batch size')
    p.add_argument('--batches', type=int, nargs='+', default=[1, 8])
    p.add_argument('--seed', type=int, default=0)
    return p.parse_args(argv)


def write_weights(folder, seed):
    """The same random SSD300 saved as GluonCV's ``.params`` and as our checkpoint; returns both paths."""
    mx.random.seed(seed)
    net = get_model(NAME, pretrained=False, pretrained_base=False)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2))
    net(mx.nd.zeros((1, 3, SHAPE, SHAPE)))
    gluon_path = os.path.join(folder, f'{NAME}.params')
    net.save_parameters(gluon_path)
    arg, aux = convert.gluoncv_ssd_params(net, SHAPE)
    prefix = os.path.join(folder, 'ssd300')
    checkpoint.save(prefix, 0, our_symbol(), arg, aux)
    return gluon_path, prefix


def our_symbol():
    return symbols.get_symbol('vgg16_reduced', 20, SHAPE, nms_thresh=0.45, nms_topk=400)


def images(batch):
    """Our input (B, 3, 300, 300) (pixels minus the mean pixel) and GluonCV's ((pixels/255 - mean)/std)."""
    names = sorted(n for n in os.listdir(SAMPLES) if n.endswith('.jpg'))
    ours = mx.nd.stack(*[preprocess(mx.image.imread(os.path.join(SAMPLES, names[i % len(names)])), SHAPE)
                         for i in range(batch)])
    # x - 255 mean  ->  (x / 255 - mean) / std
    scale = mx.nd.array([1 / (255 * s) for s in GLUONCV_STD]).reshape((1, 3, 1, 1))
    return ours, mx.nd.broadcast_mul(ours, scale)


def load_ours(prefix, batch):
    arg, aux = checkpoint.load_params(checkpoint.params_path(prefix, 0))
    detector = Detector(our_symbol(), batch, SHAPE, [mx.cpu()], arg, aux)
    return detector.detect


def load_gluoncv(path, batch):
    net = get_model(NAME, pretrained=False, pretrained_base=False)
    net.load_parameters(path)
    net.hybridize(static_alloc=True, static_shape=True)
    return lambda data: [o.asnumpy() for o in net(data)]


def onnx_loader(backend):
    """Loader of the ONNX file through ``ssd.inference.backends`` (as demo.py --backend runs it)."""
    def load(path, batch):
        return backends.make_detector(backend, None, None, None, SHAPE, batch, [mx.cpu()],
                                      onnx_file=path).detect
    return load


def onnx_model(prefix, folder):
    """The ONNX file of our graph (symbolic batch, standard NMS), or None if onnx is missing."""
    try:
        from ssd.export.onnx import export_onnx
        arg, aux = checkpoint.load_params(checkpoint.params_path(prefix, 0))
        return export_onnx(our_symbol(), arg, aux, SHAPE, None, os.path.join(folder, 'ssd300.onnx'))
    except ImportError as error:
        print(f"ONNX: skipped ({error})")
        return None


def int8_model(onnx_path, folder):
    """``deploy.py --int8``'s quantization of the export, calibrated on the sample images (the
    weights are random, so only the speed of the INT8 model means something here)."""
    from ssd.export.quantization import calibration_inputs, quantize_onnx
    names = sorted(n for n in os.listdir(SAMPLES) if n.endswith('.jpg'))
    inputs = calibration_inputs([os.path.join(SAMPLES, n) for n in names], SHAPE)
    return quantize_onnx(onnx_path, os.path.join(folder, 'ssd300-int8.onnx'), inputs)


def time_load(loader, source, batch, data):
    """(load seconds, first-forward seconds, the loaded model)."""
    start = time.perf_counter()
    run = loader(source, batch)
    loaded = time.perf_counter()
    run(data)
    return loaded - start, time.perf_counter() - loaded, run


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        gluon_path, prefix = write_weights(folder, args.seed)
        onnx_path = onnx_model(prefix, folder)
        runtimes = [b for b in ('onnxruntime', 'openvino') if onnx_path and backends.installed(b)]
        int8_path = int8_model(onnx_path, folder) if 'onnxruntime' in runtimes else None
        print(f"SSD300 vgg16_reduced, 20 classes, random weights, CPU ({os.cpu_count()} cores), "
              f"NMS 0.45 top 400; medians of {args.load_rounds} loads and {args.rounds} steady rounds")
        for batch in args.batches:
            contenders = {'ours': (load_ours, prefix), 'GluonCV': (load_gluoncv, gluon_path)}
            for backend in runtimes:
                contenders[backend] = (onnx_loader(backend), onnx_path)
            for backend in runtimes if int8_path else []:
                contenders[f'{backend} int8'] = (onnx_loader(backend), int8_path)
            report(batch, contenders, args)


def report(batch, contenders, args):
    ours_data, gluon_data = images(batch)
    inputs = {name: gluon_data if name == 'GluonCV' else ours_data for name in contenders}
    loads = {name: [] for name in contenders}
    for _ in range(args.load_rounds):
        models = {}
        for name, (loader, source) in contenders.items():
            load, first, models[name] = time_load(loader, source, batch, inputs[name])
            loads[name].append((load, first))
    steady = {name: [] for name in contenders}
    for name, run in models.items():
        run(inputs[name])  # a second warm-up forward
    for _ in range(args.rounds):
        for name, run in models.items():
            start = time.perf_counter()
            run(inputs[name])
            steady[name].append((time.perf_counter() - start) / batch)
    print(f"\nbatch {batch}:  {'load s':>8} {'first ms':>9} {'per image ms':>13}   "
          f"ratio to GluonCV (load, first, per image)")
    for name in contenders:
        load, first = (statistics.median(t[i] for t in loads[name]) for i in (0, 1))
        ratios = [median_ratio([t[i] for t in loads[name]], [t[i] for t in loads['GluonCV']]) for i in (0, 1)]
        ratios.append(median_ratio(steady[name], steady['GluonCV']))
        print(f"  {name:<16} {load:8.2f} {first * 1000:9.0f} {statistics.median(steady[name]) * 1000:13.1f}   "
              + ', '.join(f'{r:.2f}x' for r in ratios))


def median_ratio(ours, theirs):
    return statistics.median(a / b for a, b in zip(ours, theirs))


if __name__ == '__main__':
    main()
