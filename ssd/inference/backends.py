"""Inference backends: MXNet, or the ONNX export run by onnxruntime or OpenVINO.

Every detector has ``ssd.inference.detector.Detector``'s interface: ``detect(images)`` with images
(b, 3, S, S) (NDArray or NumPy, float32, preprocessed as ``ssd.data.dataset.preprocess`` does) and
b <= its batch size, returning (b, N, 6) NumPy rows ``[class_id, score, xmin, ymin, xmax,
ymax]`` (normalised corners, class_id -1 for empty rows), the rows MXNet gives
(``tests/test_backends.py``). The ONNX model is exported once with a symbolic batch axis
and cached as ``CACHE_PREFIX-<key>.onnx``, the key a hash of the graph and its weights (a
retrained checkpoint or other NMS settings get a new file), unless a file is given.
"""
import hashlib
import json
import logging
import os

import numpy as np

from .detector import Detector

__all__ = ['BACKENDS', 'BackendUnavailable', 'make_detector', 'resolve', 'installed', 'cached_onnx',
           'check_onnx_file']

#: Backend names; ``auto`` is the fastest installed one (``AUTO_ORDER``).
BACKENDS = ('auto', 'mxnet', 'onnxruntime', 'openvino')
#: Preference of ``auto``: onnxruntime and OpenVINO take 0.43-0.50x of MXNet's time per image
#: on SSD300 (docs/benchmarks.md), onnxruntime slightly faster at batch 1 and, unlike
#: OpenVINO, in MXNet's order among exactly tied scores.
AUTO_ORDER = ('onnxruntime', 'openvino', 'mxnet')
_PACKAGES = {'onnxruntime': ['onnx', 'onnxruntime'], 'openvino': ['onnx', 'openvino']}
log = logging.getLogger(__name__)


class BackendUnavailable(ValueError):
    """The runtime package of a backend is not installed; the message names the extra."""


def make_detector(backend, symbol, arg_params, aux_params, data_shape, batch_size, ctx,
                  cache_prefix=None, onnx_file=None):
    """A detector of ``symbol`` (inference graph ending in detections) run by ``backend``.

    ``ctx`` is the list of MXNet contexts (mxnet backend only; the others run on the CPU;
    ``auto`` is mxnet on GPUs).
    ``onnx_file`` is an existing ONNX export to run; otherwise one is exported to
    ``cached_onnx(cache_prefix, ...)`` (or a temporary file without a prefix) on first use.
    Raises ``BackendUnavailable`` when the backend's packages do not import, ``ValueError``
    for an unknown backend.
    """
    on_gpu = any(c.device_type == 'gpu' for c in ctx)
    backend = 'mxnet' if backend == 'auto' and on_gpu else resolve(backend)
    if backend == 'mxnet':
        return Detector(symbol, batch_size, data_shape, ctx, arg_params, aux_params)
    fixed_batch = None
    if onnx_file is None:
        onnx_file = cached_onnx(cache_prefix, symbol, arg_params, aux_params, data_shape)
    elif not os.path.isfile(onnx_file):
        raise FileNotFoundError(f"--onnx {onnx_file} does not exist")
    else:  # OpenVINO compiles for the batch size; onnxruntime needs a symbolic or equal batch axis
        fixed_batch = check_onnx_file(onnx_file, data_shape, batch_size if backend == 'onnxruntime' else None)
    try:
        if backend == 'onnxruntime':
            # a fixed batch axis (deploy.py --batch-size): a short last batch is padded
            return OnnxDetector(_onnxruntime_runner(onnx_file), batch_size, pad=fixed_batch is not None)
        return OnnxDetector(_openvino_runner(onnx_file, batch_size, data_shape), batch_size, pad=True)
    except Exception as error:  # the runtimes' own exception types: a file they cannot load or compile
        raise ValueError(f"--onnx {onnx_file}: {backend} cannot run it ({_last_line(error)})") from error


def check_onnx_file(path, data_shape, batch_size=None):
    """Raise ``ValueError`` naming ``path`` unless it is an ONNX model with an input ``data`` of
    (batch, 3, H, W) images of ``data_shape`` (the checkpoint's input size); with ``batch_size``,
    a fixed batch axis must be that size. Returns the fixed batch size, or None (symbolic)."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as error:  # DecodeError and others: not a protobuf ONNX file
        raise ValueError(f"--onnx {path} is not an ONNX model ({_last_line(error)})") from error
    weights = {tensor.name for tensor in model.graph.initializer}
    inputs = {i.name: i for i in model.graph.input if i.name not in weights}
    if 'data' not in inputs:
        raise ValueError(f"--onnx {path} has no input 'data' (inputs: {', '.join(inputs) or 'none'}): "
                         f"not an export of this project's detector")
    dims = [d.dim_value or d.dim_param or '?' for d in inputs['data'].type.tensor_type.shape.dim]
    if len(dims) != 4 or list(dims[1:]) != [3] + _as_hw(data_shape):
        raise ValueError(f"--onnx {path} takes input data of shape ({', '.join(map(str, dims))}), not (batch, 3, "
                         f"{', '.join(map(str, _as_hw(data_shape)))}) of the model's data shape")
    if batch_size is not None and isinstance(dims[0], int) and dims[0] != batch_size:
        raise ValueError(f"--onnx {path} was exported for batches of exactly {dims[0]} images, not {batch_size}: "
                         f"pass --batch-size {dims[0]}, or export it without deploy.py's --batch-size")
    return dims[0] if isinstance(dims[0], int) else None


def _last_line(error):
    return (str(error).strip().splitlines() or [type(error).__name__])[-1]


def resolve(backend):
    """``backend`` itself (checked installed) or, for ``auto``, the first installed of
    ``AUTO_ORDER``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == 'auto':
        return next(name for name in AUTO_ORDER if name == 'mxnet' or installed(name))
    if backend != 'mxnet' and not installed(backend):
        raise BackendUnavailable(
            f"backend {backend} needs the {' and '.join(_PACKAGES[backend])} packages: "
            f"pip install -c constraints.txt -e \".[onnx]\"")
    return backend


def installed(backend):
    """Whether the packages of ``backend`` (onnxruntime or openvino) import."""
    try:
        for package in _PACKAGES[backend]:
            __import__(package)
    except ImportError:
        return False
    return True


class OnnxDetector:
    """``detect(images)`` -> (b, N, 6) NumPy through an ONNX runtime's ``run(batch)``."""

    def __init__(self, run, batch_size, pad=False):
        self.run = run
        self.batch_size = batch_size
        self.pad = pad  # a runner compiled for exactly batch_size images: fill a short batch with zeros

    def detect(self, images):
        images = images.asnumpy() if hasattr(images, 'asnumpy') else np.asarray(images)
        count = images.shape[0]
        if count > self.batch_size:
            raise ValueError(f"{count} images for a batch size of {self.batch_size}")
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self.pad and count < self.batch_size:
            images = np.concatenate([images, np.zeros((self.batch_size - count,) + images.shape[1:], np.float32)])
        return self.run(images)[:count]


def _onnxruntime_runner(path):
    import onnxruntime
    options = onnxruntime.SessionOptions()
    # with a symbolic batch axis, onnxruntime 1.18.1's memory patterns break the second run
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    return lambda images: session.run(None, {'data': images})[0]


def _openvino_runner(path, batch_size, data_shape):
    import openvino
    core = openvino.Core()
    model = core.read_model(path)
    # Compiled for a fixed input: about 10% faster at batch 1 than the symbolic batch axis, and
    # OpenVINO 2026.4 runs INT8 (QuantizeLinear/DequantizeLinear) exports with static shapes only.
    model.reshape({'data': [batch_size, 3] + list(_as_hw(data_shape))})
    # f32: on CPUs with bf16 support OpenVINO would otherwise lower the precision of float layers
    compiled = core.compile_model(model, 'CPU', {'INFERENCE_PRECISION_HINT': 'f32'})
    request = compiled.create_infer_request()
    return lambda images: request.infer({'data': images})[0].copy()


def _as_hw(data_shape):
    return [data_shape, data_shape] if isinstance(data_shape, int) else [int(v) for v in data_shape]


def cached_onnx(cache_prefix, symbol, arg_params, aux_params, data_shape):
    """Path of the ONNX export of this graph and these weights, exported if not there yet.

    ``CACHE_PREFIX-<key>.onnx`` (written atomically); without a prefix, or where the folder
    is not writable, a file in the temporary folder.
    """
    from ssd.export.onnx import export_onnx
    key = _fingerprint(symbol, {**arg_params, **aux_params}, data_shape)
    if cache_prefix is None or not os.access(os.path.dirname(os.path.abspath(cache_prefix)), os.W_OK):
        import tempfile
        cache_prefix = os.path.join(tempfile.gettempdir(), 'multibox-ssd')
    path = f'{cache_prefix}-{key}.onnx'
    if not os.path.isfile(path):
        log.info('exporting the model to %s (once)', path)
        export_onnx(symbol, arg_params, aux_params, data_shape, None, path)
    return path


def _fingerprint(symbol, params, data_shape):
    """12 hex digits of a hash of the graph, the input size and every weight.

    Operator nodes are hashed without their names: MXNet numbers them from a process-wide
    counter, so the same graph built twice has other names.
    """
    nodes = [(n['op'], n['name'] if n['op'] == 'null' else '', n.get('attrs'), n['inputs'])
             for n in json.loads(symbol.tojson())['nodes']]
    digest = hashlib.sha1(json.dumps(nodes, sort_keys=True).encode())
    digest.update(str(data_shape).encode())
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(params[name].asnumpy()).tobytes())
    return digest.hexdigest()[:12]
