"""ONNX export of the inference graph (``onnx``, with the operator ``converters`` it installs)
and its INT8 ``quantization``. Imports ``ssd.data`` and the top-level modules (``ssd.checkpoint``),
not ``ssd.inference`` or ``ssd.training``."""
