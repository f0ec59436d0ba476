"""Running and scoring a trained detector: the ``detector`` over batches, the ``models`` the
scripts load, the ``backends`` that run them (MXNet, or the ONNX export by onnxruntime or
OpenVINO), ``evaluation`` (VOC and COCO AP) and the result files (``results``). Imports ``ssd.export``
(an ONNX backend exports on first use), ``ssd.data`` and the top-level modules, not ``ssd.training``."""
