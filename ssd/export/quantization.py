"""INT8 post-training static quantization of an ONNX export (``deploy.py --int8``).

onnxruntime's quantizer writes a QDQ model: every ``Conv`` gets int8 weights (one scale per
output channel) and a uint8 input whose range is the MinMax of the calibration images'
activations, as ``QuantizeLinear``/``DequantizeLinear`` pairs around the float operator. The
rest stays float: the class softmax, box decoding and NMS (so scores are not rounded to 1/255),
and by default the depthwise convolutions.
Runtimes fuse the pairs into integer convolutions where the CPU has integer dot products (VNNI,
AMX); elsewhere the model can be slower than the float one (docs/benchmarks.md).
"""
import numpy as np

from ssd.data.dataset import preprocess
from ssd.data.images import UnreadableImage, read_image

__all__ = ['calibration_inputs', 'readable_inputs', 'depthwise', 'quantize_onnx']


def calibration_inputs(paths, data_shape):
    """(n, 3, S, S) float32 network inputs of the image files ``paths`` (``preprocess``ed).
    Raises ``images.UnreadableImage`` naming a file that does not decode."""
    return np.stack([preprocess(read_image(path), data_shape).asnumpy() for path in paths])


def readable_inputs(paths, data_shape, limit):
    """``(inputs, skipped)``: the (n, 3, S, S) network inputs of the first ``limit`` images of
    ``paths`` that decode, and the messages of those that do not (``images.UnreadableImage``,
    each naming its file), which are passed over."""
    inputs, skipped = [], []
    for path in paths:
        if len(inputs) == limit:
            break
        try:
            inputs.append(preprocess(read_image(path), data_shape).asnumpy())
        except UnreadableImage as error:
            skipped.append(str(error))
    shape = (0, 3) + ((data_shape, data_shape) if isinstance(data_shape, int) else tuple(data_shape))
    return (np.stack(inputs) if inputs else np.zeros(shape, np.float32)), skipped


def depthwise(node):
    """Whether the ONNX ``Conv`` ``node`` is grouped (MobileNet's depthwise 3x3 layers)."""
    return any(attribute.name == 'group' and attribute.i > 1 for attribute in node.attribute)


def quantize_onnx(float_path, int8_path, inputs, keep_float=depthwise):
    """Write to ``int8_path`` the QDQ INT8 model of the float ONNX file ``float_path``,
    calibrated on ``inputs`` (n, 3, S, S), one image at a time; returns ``int8_path``.

    Activation ranges come from entropy calibration (a histogram per tensor, the range that
    loses least information), and the ``Conv`` nodes ``keep_float`` picks stay float: by
    default the depthwise ones, whose per-channel ranges vary most. On the shipped model
    (held-out VOC07 mAP 0.760 in float) that gives 0.757; every convolution in INT8 with MinMax
    ranges gave 0.737 (docs/benchmarks.md).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Images(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(inputs)

        def get_next(self):
            image = next(self.remaining, None)
            return None if image is None else {'data': image[None].astype(np.float32)}

    model = onnx.load(float_path)
    for node in model.graph.node:
        node.name = node.name or node.output[0]  # mx2onnx leaves many nodes unnamed
    softmax = [node for node in model.graph.node if node.op_type == 'Softmax']
    float_convs = [node for node in model.graph.node if node.op_type == 'Conv' and keep_float(node)]
    # 'Softmax' among the calibrated types but its nodes excluded: onnxruntime 1.18 sets a
    # [0, 1] range on every Softmax output and fails when that tensor was not calibrated
    quantize_static(model, int8_path, Images(), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=['Conv', 'Softmax'], nodes_to_exclude=[n.name for n in softmax + float_convs], per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Entropy)
    return int8_path
