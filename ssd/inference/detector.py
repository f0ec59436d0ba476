"""Run an inference Symbol (ending in MultiBoxDetection) over batches, on one or several devices.

Used by training-time validation, evaluate.py and demo.py, so all three decode with the same
NMS settings and the same graph.
"""
import mxnet as mx

from .evaluation import pixel_detections

__all__ = ['Detector', 'contexts', 'check_batch_split', 'evaluate_loader']


def contexts(gpus='', num_cpu_contexts=1):
    """``--gpus 0,1`` -> GPU contexts; empty -> ``num_cpu_contexts`` CPU contexts."""
    gpus = [g for g in str(gpus or '').replace(' ', '').split(',') if g]
    if gpus:
        if not all(g.isdigit() for g in gpus):
            raise ValueError(f"--gpus must be a comma list of device numbers, got {gpus!r}")
        return [mx.gpu(int(g)) for g in gpus]
    if num_cpu_contexts < 1:
        raise ValueError(f"--num-cpu-contexts must be at least 1, got {num_cpu_contexts}")
    return [mx.cpu(i) for i in range(num_cpu_contexts)]


def check_batch_split(batch_size, ctx):
    """ValueError unless each of the devices ``ctx`` gets at least one image of a batch."""
    if batch_size < len(ctx):  # MXNet's own message: "Too many slices. Some splits are empty."
        raise ValueError(f"--batch-size {batch_size} is smaller than the {len(ctx)} devices it is split over "
                         f"(--gpus / --num-cpu-contexts): each needs at least one image")


class Detector:
    """An inference Module: ``detect(images)`` -> (B, N, 6) detections as NumPy."""

    def __init__(self, symbol, batch_size, data_shape, ctx, arg_params=None, aux_params=None):
        check_batch_split(batch_size, ctx)
        self.batch_size = batch_size
        self.module = mx.mod.Module(symbol, data_names=['data'], label_names=None, context=ctx)
        self.module.bind(data_shapes=[('data', (batch_size, 3, data_shape, data_shape))], for_training=False)
        if arg_params is not None:
            self.set_params(arg_params, aux_params)

    def set_params(self, arg_params, aux_params):
        # the training graph has extra arguments (e.g. label); keep the ones this graph uses
        names = set(self.module.symbol.list_arguments())
        self.module.set_params({k: v for k, v in arg_params.items() if k in names}, aux_params or {},
                               allow_missing=False, allow_extra=True)

    def detect(self, images):
        """``images`` (b, 3, S, S) with b <= batch_size; returns (b, N, 6) NumPy detections."""
        count = images.shape[0]
        if count < self.batch_size:  # pad the last batch; the padding rows are dropped below
            filler = mx.nd.zeros((self.batch_size - count,) + images.shape[1:], dtype=images.dtype)
            images = mx.nd.concat(images, filler, dim=0)
        self.module.forward(mx.io.DataBatch([images]), is_train=False)
        return self.module.get_outputs()[0].asnumpy()[:count]


def evaluate_loader(detector, loader, source, evaluator, on_image=None):
    """Detect every batch of ``loader`` and score each image against its annotation in pixels.

    ``loader`` yields ``(images, labels, meta)`` of a ``DetectionDataset`` over ``source``;
    ``evaluator.add(detections, truth)`` gets one image's pixel detections (``pixel_detections``)
    and the ground truth of ``source.truth``; ``on_image(index, detections)`` sees them too (for
    result files). A sample standing in for an unreadable image (``meta[3] >= 0``) is not scored
    twice. Returns ``(summary, unreadable)``: the evaluator's summary and the sorted indices of
    the images that could not be decoded (their objects are not scored).
    """
    unreadable = set()
    for images, _, meta in loader:
        detections = detector.detect(images)
        for rows, (index, width, height, bad) in zip(detections, meta.asnumpy()):
            if bad >= 0:
                unreadable.add(int(bad))
                continue
            found = pixel_detections(rows, width, height)
            evaluator.add(found, source.truth(int(index), width, height))
            if on_image is not None:
                on_image(int(index), found)
    return evaluator.summary(), sorted(unreadable)
