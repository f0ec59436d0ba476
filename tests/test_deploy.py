"""deploy.py: an inference graph with decoding and NMS baked in, run by plain MXNet (no multibox,
no project code) with the same detections as demo.py; NMS settings; the optional ONNX export."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types

import mxnet as mx
import numpy as np
import pytest

import demo
import deploy
import symbols
from ssd import checkpoint
from ssd.options import SHIPPED_EPOCH
from tiny_ssd import NETWORK, SHAPE, save_checkpoint, write_image

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Plain MXNet only: the project's packages cannot be imported, cwd is not the repository.
LOADER = textwrap.dedent('''
    import sys, json
    for name in ('multibox', 'symbols', 'ssd'):
        sys.modules[name] = None  # any attempt to import them now fails
    import mxnet as mx
    prefix, image_path, shape, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    symbol = mx.sym.load(prefix + '-symbol.json')
    arrays = mx.nd.load(prefix + '-0000.params')
    module = mx.mod.Module(symbol, data_names=['data'], label_names=None)
    module.bind([('data', (1, 3, shape, shape))], for_training=False)
    module.set_params({k[4:]: v for k, v in arrays.items() if k.startswith('arg:')},
                      {k[4:]: v for k, v in arrays.items() if k.startswith('aux:')})
    image = mx.image.imread(image_path)  # HWC RGB uint8
    height, width = image.shape[:2]
    resized = mx.image.imresize(image, shape, shape, interp=1)
    data = mx.nd.image.normalize(mx.nd.image.to_tensor(resized), mean=(0.485, 0.456, 0.406),
                                 std=(1 / 255, 1 / 255, 1 / 255))
    module.forward(mx.io.DataBatch([data.expand_dims(0)]), is_train=False)
    rows = module.get_outputs()[0][0].asnumpy()
    json.dump([[int(r[0]), float(r[1]), float(r[2] * width), float(r[3] * height), float(r[4] * width),
                float(r[5] * height)] for r in rows if r[0] >= 0], open(out, 'w'))
''')
TRAINING_OPS = {'SoftmaxOutput', 'MakeLoss', 'smooth_l1'}


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp('model') / 'ssd')


def as_rows(records):
    return [[r['class_id'], r['score']] + r['box'] for r in records]


def test_deploy_graph_runs_in_plain_mxnet_with_the_demo_detections(prefix, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'deploy.py'), '--network', NETWORK, '--data-shape',
                             str(SHAPE), '--prefix', prefix, '--epoch', '1'], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    graph = json.load(open(f'{prefix}-deploy-symbol.json'))
    ops = {node['op'] for node in graph['nodes']}
    names = {node['name'] for node in graph['nodes']}
    assert not ops & TRAINING_OPS and 'label' not in names and not [o for o in ops if 'MultiBox' in o]
    info = json.load(open(f'{prefix}-deploy-0000.json'))
    assert info['network'] == NETWORK and info['data_shape'] == SHAPE and len(info['class_names']) == 4
    assert not [n for n in os.listdir(os.path.dirname(prefix)) if n.startswith('.')]  # no temporary left

    image = tmp_path / 'a.jpg'
    write_image(image, seed=21)
    subprocess.run([sys.executable, '-c', LOADER, f'{prefix}-deploy', str(image), str(SHAPE),
                    str(tmp_path / 'plain.json')], check=True, cwd=str(tmp_path), env={**os.environ, 'PYTHONPATH': ''})
    plain = json.load(open(tmp_path / 'plain.json'))
    assert len(plain) > 10

    for extra in ([], ['--deploy']):  # the checkpoint through symbols.get_symbol, then the deploy graph
        records = tmp_path / 'demo.json'
        assert demo.main([str(image), '--prefix', prefix, '--epoch', '1', '--thresh', '0', '--json', str(records),
                          '--out-dir', str(tmp_path)] + extra) == 0
        ours = as_rows(json.load(open(records)))
        assert len(ours) == len(plain)
        np.testing.assert_array_equal([r[0] for r in ours], [r[0] for r in plain])
        np.testing.assert_allclose(np.array(ours)[:, 1:], np.array(plain)[:, 1:], rtol=1e-5, atol=1e-3)


def test_nms_settings_are_baked_into_the_graph(prefix, tmp_path, caplog):
    out = str(tmp_path / 'ssd')
    for suffix in ('-symbol.json', '-0001.params', '-0001.json'):  # a copy: the deploy files go beside it
        with open(prefix + suffix, 'rb') as src, open(out + suffix, 'wb') as dst:
            dst.write(src.read())
    assert deploy.main(['--prefix', out, '--epoch', '1', '--nms', '0.3', '--nms-topk', '20', '--force-nms']) == 0
    info = json.load(open(f'{out}-deploy-0000.json'))
    assert (info['nms_threshold'], info['nms_topk'], info['force_suppress']) == (0.3, 20, True)
    data = mx.nd.random.uniform(-100, 100, (1, 3, SHAPE, SHAPE))
    arg, aux = checkpoint.load_params(f'{out}-deploy-0000.params')
    expected = symbols.get_symbol(NETWORK, 4, SHAPE, nms_thresh=0.3, force_suppress=True, nms_topk=20)
    outputs = [graph.bind(mx.cpu(), args=dict(arg, data=data), aux_states=aux, grad_req='null').forward()[0].asnumpy()
               for graph in (mx.sym.load(f'{out}-deploy-symbol.json'), expected)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert 0 < (outputs[0][0, :, 0] >= 0).sum() <= 20
    assert demo.main([str(tmp_path), '--prefix', out, '--deploy', '--nms', '0.5']) == 2
    assert 'baked into a --deploy graph' in caplog.text


@pytest.mark.parametrize('extra, message', [
    (['--prefix', 'nowhere/ssd'], f'nowhere/ssd-{SHIPPED_EPOCH:04d}.params does not exist'),
    (['--num-class', '3'], '--num-class 3 does not match the 4 class names'),
    (['--network', 'nonet'], "unknown network 'nonet'"),
])
def test_deploy_problems_are_clear_errors(prefix, caplog, extra, message):
    arguments = ['--prefix', prefix, '--epoch', '1'] if extra[0] != '--prefix' else []
    assert deploy.main(arguments + extra) == 2
    assert message in caplog.text


def test_a_damaged_deploy_graph_exits_2_naming_it(prefix, tmp_path, caplog):
    out = str(tmp_path / 'ssd')
    for suffix in ('-0001.params', '-0001.json'):
        shutil.copy(prefix + suffix, out + suffix)
    assert deploy.main(['--prefix', out, '--epoch', '1']) == 0
    write_image(tmp_path / 'a.jpg', seed=1)
    with open(f'{out}-deploy-symbol.json', 'r+') as f:  # cut short
        text = f.read()
        f.seek(0)
        f.truncate()
        f.write(text[:len(text) // 2])
    # before: MXNetError traceback from mx.sym.load, exit 1
    assert demo.main([str(tmp_path / 'a.jpg'), '--prefix', out, '--deploy']) == 2
    assert f'deploy graph {out}-deploy-symbol.json is damaged or not an MXNet symbol file (' in caplog.text


def test_onnx_export_calls_the_exporter(prefix, tmp_path, monkeypatch):
    calls = []

    def export_onnx(symbol, arg_params, aux_params, data_shape, batch_size, path, opset=None,
                    nms=None):
        calls.append((symbol, set(arg_params), data_shape, batch_size, opset, nms))
        with open(path, 'w') as f:
            f.write('onnx')
    monkeypatch.setitem(sys.modules, 'ssd.export.onnx', types.SimpleNamespace(export_onnx=export_onnx))
    target = tmp_path / 'model.onnx'
    arguments = ['--prefix', prefix, '--epoch', '1', '--onnx', str(target), '--onnx-opset', '13', '--batch-size', '2',
                 '--onnx-nms', 'exact']
    assert deploy.main(arguments) == 0
    (symbol, names, data_shape, batch_size, opset, nms), = calls
    assert symbol.list_outputs() == mx.sym.load(f'{prefix}-deploy-symbol.json').list_outputs()
    assert names == set(symbol.list_arguments()) - {'data'}
    assert (data_shape, batch_size, opset, nms) == (SHAPE, 2, 13, 'exact')
    assert target.read_text() == 'onnx'


def test_onnx_export_without_the_onnx_package_is_a_clear_error(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'onnx', None)  # as if the optional onnx package were not installed
    prefix = save_checkpoint(tmp_path / 'ssd')
    assert deploy.main(['--prefix', prefix, '--epoch', '1', '--onnx', str(tmp_path / 'm.onnx')]) == 1
    assert 'needs the onnx package' in caplog.text and '.[onnx]' in caplog.text
    assert os.path.isfile(f'{prefix}-deploy-symbol.json') and not (tmp_path / 'm.onnx').exists()
