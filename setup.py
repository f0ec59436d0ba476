"""multibox: MXNet's MultiBoxPrior/Target/Detection as Gluon HybridBlocks, plus an SSD toolkit."""
from setuptools import find_packages, setup

setup(
    name='multibox',
    version='0.1.0',
    description="Exact, exportable Gluon reimplementation of MXNet's contrib MultiBox operators, "
                "with SSD symbol builders and training/demo scripts",
    python_requires='>=3.8',
    packages=find_packages(include=['multibox', 'symbols', 'ssd', 'ssd.*']),
    # MXNet itself comes from an extra: the CPU wheel ("mxnet") and the CUDA 11.2 wheel
    # ("mxnet-cu112") are different distributions that must not be installed together.
    install_requires=[
        'numpy<1.24',
        'gluoncv==0.10.5.post0',
        'scipy<1.12',
        'pandas<2.1',
        'matplotlib<3.9',
        'opencv-python<4.9',
        'tqdm',
        'pycocotools',
    ],
    extras_require={
        'cpu': ['mxnet==1.9.1'],
        'gpu': ['mxnet-cu112==1.9.1'],
        # ONNX export (ssd.export.onnx); onnxruntime and OpenVINO run the exported model
        'onnx': ['onnx', 'onnxruntime', 'openvino'],
        'test': ['pytest', 'onnx', 'onnxruntime', 'openvino'],
    },
)
