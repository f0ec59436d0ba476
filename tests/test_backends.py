"""demo.py and evaluate.py give the same detections whatever the backend (ssd.inference.backends)."""
import glob
import json
import os
import sys

import pytest

import demo
import evaluate
from ssd.data import synthetic
from ssd.inference import backends
from ssd.options import SHIPPED_EPOCH

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGES = os.path.join(ROOT, 'examples', 'images')
ATOL = 1e-4


def demo_records(prefix, tmp_path, backend):
    records = tmp_path / f'{backend}.json'
    assert demo.main([IMAGES, '--prefix', prefix, '--thresh', '0.05', '--backend', backend,
                      '--out-dir', str(tmp_path / backend), '--json', str(records)]) == 0
    return json.loads(records.read_text())


def assert_same_records(ours, theirs):
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        assert (a['image'], a['class']) == (b['image'], b['class'])
        assert abs(a['score'] - b['score']) <= ATOL
        # boxes are in pixels of images up to 640 wide: ATOL of a normalised corner
        assert max(abs(x - y) for x, y in zip(a['box'], b['box'])) <= ATOL * 640


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino', 'auto'])
def test_demo_backends_give_mxnet_detections(shipped_copy, tmp_path, backend):
    expected = demo_records(shipped_copy, tmp_path, 'mxnet')
    assert_same_records(demo_records(shipped_copy, tmp_path, backend), expected)


def test_onnx_export_is_cached_beside_the_checkpoint_and_reused(shipped_copy, tmp_path):
    demo_records(shipped_copy, tmp_path, 'onnxruntime')
    [cached] = glob.glob(f'{shipped_copy}-{SHIPPED_EPOCH}-*.onnx')
    before = os.stat(cached).st_mtime_ns
    demo_records(shipped_copy, tmp_path, 'openvino')  # same graph and weights: same file
    assert glob.glob(f'{shipped_copy}-{SHIPPED_EPOCH}-*.onnx') == [cached]
    assert os.stat(cached).st_mtime_ns == before
    moved = str(tmp_path / 'given.onnx')
    os.rename(cached, moved)
    records = tmp_path / 'given.json'
    assert demo.main([IMAGES, '--prefix', shipped_copy, '--backend', 'onnxruntime', '--onnx', moved,
                      '--out-dir', str(tmp_path / 'given'), '--json', str(records)]) == 0
    assert not glob.glob(f'{shipped_copy}-{SHIPPED_EPOCH}-*.onnx')  # the given file was used, nothing exported


@pytest.mark.parametrize('backend, package', [('onnxruntime', 'onnxruntime'), ('openvino', 'openvino')])
def test_missing_runtime_is_a_clear_error(shipped_copy, tmp_path, monkeypatch, caplog, backend, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    assert demo.main([IMAGES, '--prefix', shipped_copy, '--backend', backend,
                      '--out-dir', str(tmp_path)]) == 2
    assert f'backend {backend} needs the onnx and {package} packages' in caplog.text
    assert 'pip install -c constraints.txt -e ".[onnx]"' in caplog.text
    assert backends.resolve('auto') != backend


def test_missing_onnx_file_is_a_clear_error(shipped_copy, tmp_path, caplog):
    assert demo.main([IMAGES, '--prefix', shipped_copy, '--backend', 'openvino', '--onnx',
                      str(tmp_path / 'none.onnx')]) == 2
    assert f'--onnx {tmp_path / "none.onnx"} does not exist' in caplog.text


def onnx_file(path, dims):
    """A one-node ONNX model (Identity) whose input ``data`` has the shape ``dims``."""
    import onnx
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node('Identity', ['data'], ['detections'])], 'g',
                              [helper.make_tensor_value_info('data', TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info('detections', TensorProto.FLOAT, dims)])
    onnx.save(helper.make_model(graph), str(path))
    return str(path)


def test_an_onnx_file_that_does_not_fit_the_model_is_named(tmp_path):
    # before: onnxruntime's traceback at load (a damaged file) or at the first batch (another size)
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a protobuf')
    with pytest.raises(ValueError, match=f'--onnx {garbage} is not an ONNX model'):
        backends.check_onnx_file(str(garbage), 256)
    other = onnx_file(tmp_path / 'other.onnx', ['batch', 3, 128, 128])
    with pytest.raises(ValueError, match=rf'--onnx {other} takes input data of shape \(batch, 3, 128, 128\), not '
                                         rf'\(batch, 3, 256, 256\) of the model.s data shape'):
        backends.check_onnx_file(other, 256)
    fixed = onnx_file(tmp_path / 'fixed.onnx', [1, 3, 256, 256])
    with pytest.raises(ValueError, match=rf'--onnx {fixed} was exported for batches of exactly 1 images, not 8: '
                                         rf'pass --batch-size 1'):
        backends.check_onnx_file(fixed, 256, batch_size=8)
    assert backends.check_onnx_file(fixed, 256, batch_size=1) == 1
    assert backends.check_onnx_file(fixed, 256) == 1 and backends.check_onnx_file(other, 128, batch_size=8) is None


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_demo_with_a_damaged_onnx_file_exits_2_naming_it(shipped_copy, tmp_path, caplog, backend):
    garbage = tmp_path / 'garbage.onnx'
    garbage.write_bytes(b'not a protobuf')
    assert demo.main([IMAGES, '--prefix', shipped_copy, '--backend', backend, '--onnx', str(garbage),
                      '--out-dir', str(tmp_path)]) == 2
    assert f'--onnx {garbage} is not an ONNX model (' in caplog.text


def test_evaluate_backends_give_the_same_ap(shipped_copy, tmp_path, capsys):
    root = str(tmp_path / 'data')
    synthetic.ensure_dataset(root, num_train=1, num_test=6, seed=9)
    tables = {}
    for backend in ('mxnet', 'onnxruntime', 'openvino'):
        assert evaluate.main(['--data-root', root, '--prefix', shipped_copy, '--epoch', str(SHIPPED_EPOCH),
                              '--batch-size', '4', '--num-workers', '0', '--backend', backend]) == 0
        tables[backend] = capsys.readouterr().out
    assert 'mAP' in tables['mxnet']
    assert tables['onnxruntime'] == tables['mxnet'] == tables['openvino']


def test_an_onnx_file_with_a_fixed_batch_pads_the_short_last_batch(shipped_copy, tmp_path, capsys):
    import deploy
    root = str(tmp_path / 'data')
    synthetic.ensure_dataset(root, num_train=1, num_test=5, seed=9)
    fixed = str(tmp_path / 'fixed.onnx')
    assert deploy.main(['--prefix', shipped_copy, '--onnx', fixed, '--batch-size', '3']) == 0
    capsys.readouterr()
    tables = {}
    for backend in ('mxnet', 'onnxruntime'):  # 5 images: batches of 3 and 2
        # before: onnxruntime's traceback "Got: 2 Expected: 3" at the short last batch
        assert evaluate.main(['--data-root', root, '--prefix', shipped_copy, '--epoch', str(SHIPPED_EPOCH),
                              '--batch-size', '3', '--num-workers', '0', '--backend', backend] +
                             (['--onnx', fixed] if backend != 'mxnet' else [])) == 0
        tables[backend] = capsys.readouterr().out
    assert 'in pixels, 5 images' in tables['mxnet'] and tables['onnxruntime'] == tables['mxnet']
