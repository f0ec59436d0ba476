"""deploy.py --int8: the shipped model's INT8 ONNX export, calibrated on training images, run by
onnxruntime and OpenVINO on held-out images (the accuracy measured on 300 images is in
docs/benchmarks.md; here a smaller set bounds it)."""
import collections
import os
import re
import shutil

import onnx
import pytest

import deploy
import evaluate
from ssd.data import synthetic
from ssd.options import SHIPPED_EPOCH

pytestmark = pytest.mark.e2e

MAP = re.compile(r'^mAP\s+(\d\.\d{4})$', re.M)


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A synthetic set of its own seed: 100 training images to calibrate on (deploy.py takes up
    to 100), 80 held out."""
    root = str(tmp_path_factory.mktemp('int8') / 'synthetic')
    synthetic.ensure_dataset(root, num_train=100, num_test=80, seed=21)
    folder = os.path.join(os.path.dirname(root), 'calibration')
    os.makedirs(folder)
    with open(os.path.join(root, 'VOC2007', 'ImageSets', 'Main', 'trainval.txt')) as f:
        for name in f.read().split():
            shutil.copy(os.path.join(root, 'VOC2007', 'JPEGImages', f'{name}.jpg'), folder)
    return root, folder


@pytest.fixture(scope='module')
def int8_model(shipped_copy, data, tmp_path_factory):
    path = str(tmp_path_factory.mktemp('int8-model') / 'ssd-int8.onnx')
    assert deploy.main(['--prefix', shipped_copy, '--onnx', path, '--int8', data[1]]) == 0
    return path


def held_out_map(shipped_copy, root, capsys, *backend):
    capsys.readouterr()
    assert evaluate.main(['--data-root', root, '--prefix', shipped_copy, '--epoch', str(SHIPPED_EPOCH),
                          '--num-workers', '0', '--batch-size', '8'] + list(backend)) == 0
    return float(MAP.findall(capsys.readouterr().out)[-1])


def test_convolutions_are_int8_except_depthwise_softmax_and_nms_stay_float(int8_model):
    graph = onnx.load(int8_model).graph
    producers = {output: node for node in graph.node for output in node.output}
    convs = collections.Counter()
    for node in graph.node:
        if node.op_type == 'Conv':
            grouped = any(a.name == 'group' and a.i > 1 for a in node.attribute)
            quantized = all(producers.get(name) is not None and producers[name].op_type == 'DequantizeLinear'
                            for name in node.input[:2])
            convs[('depthwise' if grouped else 'dense', quantized)] += 1
    assert convs[('dense', True)] > 0 and convs[('dense', False)] == 0
    assert convs[('depthwise', True)] == 0 and convs[('depthwise', False)] > 0
    for node in graph.node:
        if node.op_type in ('Softmax', 'NonMaxSuppression'):
            assert all(producers[name].op_type != 'DequantizeLinear' for name in node.input if name in producers)


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_int8_detections_score_close_to_mxnet_on_held_out_images(shipped_copy, data, int8_model, capsys, backend):
    reference = held_out_map(shipped_copy, data[0], capsys, '--backend', 'mxnet')
    int8 = held_out_map(shipped_copy, data[0], capsys, '--backend', backend, '--onnx', int8_model)
    assert 0.5 < reference and abs(int8 - reference) <= 0.02, (reference, int8)


def test_int8_problems_exit_2_with_a_message(shipped_copy, data, tmp_path, capsys, caplog):
    with pytest.raises(SystemExit) as stop:
        deploy.parse_args(['--int8', data[1]])
    assert stop.value.code == 2 and '--int8 needs --onnx FILE' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        deploy.parse_args(['--int8', str(tmp_path / 'none'), '--onnx', str(tmp_path / 'x.onnx')])
    assert f"--int8 {tmp_path / 'none'}: not a folder" in capsys.readouterr().err
    (tmp_path / 'empty').mkdir()
    out = tmp_path / 'x.onnx'
    assert deploy.main(['--prefix', shipped_copy, '--onnx', str(out), '--int8', str(tmp_path / 'empty')]) == 2
    assert f"--int8: {tmp_path / 'empty'} holds no images" in caplog.text
    broken = tmp_path / 'broken'
    broken.mkdir()
    for name in sorted(os.listdir(data[1]))[:3]:
        shutil.copy(os.path.join(data[1], name), broken)
    first, *others = sorted(os.listdir(broken))
    (broken / first).write_bytes((broken / first).read_bytes()[:400])
    capsys.readouterr()
    # an unreadable image is named and passed over, as demo.py does: the others calibrate, exit 2
    assert deploy.main(['--prefix', shipped_copy, '--onnx', str(out), '--int8', str(broken)]) == 2
    assert f"error: --int8: skipped {broken / first}: truncated or corrupt image" in caplog.text
    assert f"wrote {out} (INT8, calibrated on 2 images; 1 unreadable skipped)" in capsys.readouterr().out
    assert out.is_file()
    for name in others:
        (broken / name).write_bytes(b'')
    out.unlink()
    assert deploy.main(['--prefix', shipped_copy, '--onnx', str(out), '--int8', str(broken)]) == 2
    assert f"--int8: none of the 3 images of {broken} can be decoded (last: {broken / others[-1]}: " in caplog.text
    assert not out.exists()
