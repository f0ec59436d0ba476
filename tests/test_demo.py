"""demo.py: detections printed and drawn in original-image pixels, validation's preprocessing,
unusual and bad images, GluonCV weights from the local model store or a clear offline error."""
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib

import mxnet as mx
import numpy as np
import pytest
from PIL import Image

import demo
from ssd.data.annotations import Record
from ssd.data.dataset import DetectionDataset, FileSource, preprocess
from tiny_ssd import SHAPE, save_checkpoint, write_image

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp('model') / 'ssd')


def run_demo(*args, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'demo.py'), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def png_header(path, width, height):
    """A PNG whose header announces ``width`` x ``height`` pixels but holds almost no data."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IDAT', zlib.compress(b'\0' * 16))
                     + chunk(b'IEND', b''))


def test_demo_decodes_and_resizes_exactly_as_validation(tmp_path):
    path = str(tmp_path / 'a.jpg')
    write_image(path, seed=3)
    source = FileSource([Record(path, np.zeros((0, 6), np.float32), 'a')])
    expected = DetectionDataset(source, SHAPE, 1, train=False)[0][0]
    np.testing.assert_array_equal(preprocess(demo.read_image(path), SHAPE).asnumpy(), expected.asnumpy())


def test_boxes_are_scaled_to_the_original_image_and_thresholded():
    rows = np.array([[1, 0.9, 0.1, 0.2, 0.5, 1.0],      # kept: rectangle
                     [0, 0.3, 0.0, 0.0, 1.0, 1.0],      # below --thresh
                     [-1, 0.95, 0.0, 0.0, 0.5, 0.5]],   # suppressed row
                    np.float32)
    records = demo.to_records(rows, 400, 200, ['circle', 'rectangle'], thresh=0.5)
    assert len(records) == 1 and records[0]['class'] == 'rectangle' and records[0]['class_id'] == 1
    np.testing.assert_allclose(records[0]['box'], [40, 40, 200, 200], rtol=1e-6)
    assert records[0]['score'] == pytest.approx(0.9)


def test_demo_prints_saves_pictures_and_json(prefix, tmp_path):
    sizes = {'a.jpg': write_image(tmp_path / 'a.jpg', seed=11)}
    (tmp_path / 'folder').mkdir()
    sizes['b.png'] = write_image(tmp_path / 'folder' / 'b.png', seed=12)
    out, records = tmp_path / 'out', tmp_path / 'detections.json'
    result = run_demo(tmp_path / 'a.jpg', tmp_path / 'folder', '--prefix', prefix, '--epoch', 1, '--thresh', 0.3,
                      '--out-dir', out, '--json', records, '--timer')
    assert result.returncode == 0, result.stderr
    detections = json.loads(records.read_text())
    for name, (width, height) in sizes.items():
        mine = [d for d in detections if os.path.basename(d['image']) == name]
        assert f"{name}: {width}x{height}, {len(mine)} detection(s)" in result.stdout
        for d in mine:
            assert d['score'] >= 0.3 and d['class'] in ('circle', 'rectangle', 'triangle', 'cross')
            xmin, ymin, xmax, ymax = d['box']
            assert 0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height
            assert f"  {d['class']:<14} {d['score']:.3f}  [{xmin:7.1f}," in result.stdout
        with Image.open(out / (name.split('.')[0] + '_det.png')) as picture:
            assert picture.size == (width, height)  # drawn on the original image
    assert detections, 'random weights give scores above 0.3 on these images'
    assert 'time: model loaded in' in result.stdout and 'time: first image' in result.stdout


def test_bad_files_are_named_and_the_others_still_processed(prefix, tmp_path):
    write_image(tmp_path / 'good.jpg', seed=4)
    (tmp_path / 'text.jpg').write_text('not an image')
    png_header(tmp_path / 'big.png', 9000, 9000)         # 81 MP: above our 64 MP limit
    png_header(tmp_path / 'bomb.png', 40000, 40000)      # 1.6 GP: also Pillow's bomb check
    (tmp_path / 'empty').mkdir()
    result = run_demo(tmp_path / 'missing.jpg', tmp_path / 'text.jpg', tmp_path / 'big.png', tmp_path / 'bomb.png',
                      tmp_path / 'empty', tmp_path / 'good.jpg', '--prefix', prefix, '--epoch', 1)
    assert result.returncode == 2
    errors = result.stderr
    assert f"{tmp_path / 'missing.jpg'}: no such file" in errors
    assert f"{tmp_path / 'text.jpg'}: not an image" in errors
    assert f"{tmp_path / 'big.png'}: 9000x9000 pixels is above the limit of 64000000" in errors
    assert f"{tmp_path / 'bomb.png'}: too large, refused before decoding" in errors
    assert f"{tmp_path / 'empty'}: no images" in errors
    assert f"{tmp_path / 'good.jpg'}: " in result.stdout and (tmp_path / 'good_det.png').is_file()


def test_truncated_and_header_only_images_are_named_skipped_and_the_rest_processed(prefix, tmp_path):
    write_image(tmp_path / 'first.jpg', seed=6)
    write_image(tmp_path / 'source.png', seed=7)
    jpeg, png = (tmp_path / 'first.jpg').read_bytes(), (tmp_path / 'source.png').read_bytes()
    broken = {'truncated.jpg': jpeg[:len(jpeg) // 2], 'header_only.jpg': jpeg[:jpeg.index(b'\xff\xda')],
              'truncated.png': png[:len(png) // 2], 'png_named.jpg': png[:len(png) // 2]}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    write_image(tmp_path / 'last.png', seed=8)
    out = tmp_path / 'out'
    # before: the truncated JPEGs were run through the detector (exit 0), the truncated PNG ended the
    # run with an MXNetError traceback and the images after it were not processed
    result = run_demo(tmp_path / 'first.jpg', *(tmp_path / name for name in broken), tmp_path / 'last.png',
                      '--prefix', prefix, '--epoch', 1, '--out-dir', out, '--json', tmp_path / 'd.json')
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    for name in broken:
        assert f"error: {tmp_path / name}: truncated or corrupt image" in result.stderr
        assert f"{tmp_path / name}:" not in result.stdout and not (out / (name[:-4] + '_det.png')).exists()
    for name in ('first', 'last'):
        assert f"{tmp_path / name}" in result.stdout and (out / f'{name}_det.png').is_file()
    assert (tmp_path / 'd.json').is_file()
    assert result.stderr.strip().splitlines()[-1] == 'error: 4 of 6 images skipped (named above), 2 processed'


def test_damaged_checkpoint_files_exit_2_naming_the_file(prefix, tmp_path):
    write_image(tmp_path / 'a.jpg', seed=1)
    cases = {'truncated': lambda p: p.write_bytes(open(f'{prefix}-0001.params', 'rb').read()[:1000]),
             'garbage': lambda p: p.write_bytes(b'garbage')}
    for name, damage in cases.items():
        damage(tmp_path / f'{name}-0001.params')
        shutil.copy(f'{prefix}-0001.json', tmp_path / f'{name}-0001.json')
        result = run_demo(tmp_path / 'a.jpg', '--prefix', tmp_path / name, '--epoch', 1)
        assert result.returncode == 2 and 'Traceback' not in result.stderr
        assert (f"error: checkpoint {tmp_path / name}-0001.params is damaged or not an MXNet .params file"
                in result.stderr)
    shutil.copy(f'{prefix}-0001.params', tmp_path / 'sidecar-0001.params')
    (tmp_path / 'sidecar-0001.json').write_text('{"network": ')
    result = run_demo(tmp_path / 'a.jpg', '--prefix', tmp_path / 'sidecar', '--epoch', 1)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert f"error: checkpoint sidecar {tmp_path / 'sidecar'}-0001.json is damaged (Expecting value" in result.stderr


def test_diverged_weights_and_wrong_sidecar_values_exit_2_naming_them(prefix, tmp_path, caplog):
    write_image(tmp_path / 'a.jpg', seed=1)
    arrays = mx.nd.load(f'{prefix}-0001.params')
    arrays['arg:mobilenet_conv0_weight'][0] = np.nan
    mx.nd.save(str(tmp_path / 'nan-0001.params'), arrays)
    shutil.copy(f'{prefix}-0001.json', tmp_path / 'nan-0001.json')
    # before: exit 0, "0 detection(s)" for every image (and evaluate.py an AP of 0)
    assert demo.main([str(tmp_path / 'a.jpg'), '--prefix', str(tmp_path / 'nan'), '--epoch', '1',
                      '--backend', 'mxnet', '--out-dir', str(tmp_path / 'out')]) == 2
    assert (f"{tmp_path / 'nan'} epoch 1 holds NaN or infinity (mobilenet_conv0_weight): the weights of a run "
            f"that diverged; use an earlier epoch") in caplog.text
    assert not (tmp_path / 'out').exists()
    info = json.loads(open(f'{prefix}-0001.json').read())
    shutil.copy(f'{prefix}-0001.params', tmp_path / 'side-0001.params')
    for key, value, message in [('data_shape', 'abc', "data_shape 'abc' is not a positive size"),
                                ('class_names', 'circle', "class_names 'circle' is not a list of distinct names")]:
        (tmp_path / 'side-0001.json').write_text(json.dumps({**info, key: value}))
        caplog.clear()
        assert demo.main([str(tmp_path / 'a.jpg'), '--prefix', str(tmp_path / 'side'), '--epoch', '1']) == 2
        assert f"{tmp_path / 'side'}-0001.json: {message}; restore the file or pass --" in caplog.text


@pytest.mark.parametrize('extra, message', [
    (['--thresh', 'nan'], 'argument --thresh: expected a number from 0 to 1, got nan'),
    (['--out-dir', 'A_FILE'], 'argument --out-dir: A_FILE is a file, not a folder'),
    (['--json', 'A_FOLDER'], 'argument --json: A_FOLDER is a folder, not a file'),
])
def test_bad_options_exit_2_without_a_traceback(prefix, tmp_path, extra, message):
    write_image(tmp_path / 'a.jpg', seed=1)
    names = {'A_FILE': str(tmp_path / 'a.jpg'), 'A_FOLDER': str(tmp_path)}
    result = run_demo(tmp_path / 'a.jpg', '--prefix', prefix, '--epoch', 1, *(names.get(a, a) for a in extra))
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    for placeholder, path in names.items():
        message = message.replace(placeholder, path)
    assert message in result.stderr
    assert not (tmp_path / 'a_det.png').exists()  # nothing done before the options were checked


def test_grey_palette_rgba_and_16_bit_images_become_8_bit_rgb(prefix, tmp_path, monkeypatch, capsys):
    width, height = write_image(tmp_path / 'colour.png', seed=5)
    colour = Image.open(tmp_path / 'colour.png').convert('RGB')
    grey = colour.convert('L')
    variants = {'grey.png': grey, 'palette.png': colour.convert('P'), 'rgba.png': colour.convert('RGBA'),
                'deep.png': Image.fromarray(np.asarray(grey, np.uint16) * 257)}  # 16-bit grey, same values x 257
    for name, image in variants.items():
        image.save(tmp_path / name)
    assert Image.open(tmp_path / 'deep.png').mode.startswith('I')
    monkeypatch.delenv('DISPLAY', raising=False)
    monkeypatch.delenv('WAYLAND_DISPLAY', raising=False)
    paths = [str(tmp_path / name) for name in variants]
    assert demo.main(paths + ['--prefix', prefix, '--epoch', '1', '--out-dir', str(tmp_path / 'out'), '--show']) == 0
    assert 'no display found' in capsys.readouterr().out
    for name in variants:
        image = demo.read_image(str(tmp_path / name)).asnumpy()
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        assert (tmp_path / 'out' / (name[:-4] + '_det.png')).is_file()
    np.testing.assert_array_equal(demo.read_image(str(tmp_path / 'deep.png')).asnumpy(),
                                  np.repeat(np.asarray(grey)[..., None], 3, axis=2))
    np.testing.assert_array_equal(demo.read_image(str(tmp_path / 'rgba.png')).asnumpy(), np.asarray(colour))


@pytest.mark.parametrize('extra, message', [
    (['--prefix', 'nowhere/ssd'], 'nowhere/ssd-0001.params does not exist'),
    (['--prefix', 'PREFIX', '--class-names', 'a,b'], 'does not fit this graph with 2 classes'),
    (['--prefix', 'PREFIX', '--network', 'vgg16_reduced', '--data-shape', '300'], 'lacks'),
    (['--prefix', 'PREFIX', '--network', 'vgg16_reduced'], 'data shape 128x128 is too small for vgg16_reduced'),
    (['--prefix', 'PREFIX', '--pretrained', 'gluoncv:ssd_300_vgg16_atrous_voc'], 'drop --prefix'),
    (['--pretrained', 'ssd_300_vgg16_atrous_voc'], 'expects gluoncv:NAME'),
    (['--prefix', 'PREFIX', '--gpu', '7'], '--gpu 7: this machine'),
])
def test_model_problems_are_clear_errors(prefix, tmp_path, caplog, extra, message):
    write_image(tmp_path / 'a.jpg', seed=1)
    arguments = [str(tmp_path / 'a.jpg'), '--epoch', '1'] + [prefix if a == 'PREFIX' else a for a in extra]
    assert demo.main(arguments) == 2
    assert message in caplog.text


def _offline(monkeypatch, store):
    """GluonCV's model store in ``store``; any download attempt fails at once (closed local port)."""
    monkeypatch.setenv('MXNET_HOME', str(store))
    monkeypatch.setenv('MXNET_GLUON_REPO', 'http://127.0.0.1:9/')
    for name in ('no_proxy', 'NO_PROXY'):
        monkeypatch.setenv(name, '*')


def test_gluoncv_weights_offline_and_not_cached_is_a_clear_error(tmp_path, monkeypatch, caplog):
    _offline(monkeypatch, tmp_path / 'mxnet')
    write_image(tmp_path / 'a.jpg', seed=1)
    assert demo.main([str(tmp_path / 'a.jpg'), '--pretrained', 'gluoncv:ssd_300_vgg16_atrous_voc']) == 2
    store = str(tmp_path / 'mxnet' / 'models')
    assert f"GluonCV weights 'ssd_300_vgg16_atrous_voc' are not in the model store {store}" in caplog.text
    assert 'Run once with internet access, or copy ssd_300_vgg16_atrous_voc-' in caplog.text


def test_gluoncv_weights_from_the_local_model_store(tmp_path, monkeypatch, caplog):
    from gluoncv.model_zoo import get_model, model_store
    _offline(monkeypatch, tmp_path / 'mxnet')
    name = 'ssd_300_vgg16_atrous_voc'
    net = get_model(name, pretrained=False, pretrained_base=False)
    net.initialize(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2))
    net(mx.nd.zeros((1, 3, 300, 300)))
    (tmp_path / 'mxnet' / 'models').mkdir(parents=True)
    net.save_parameters(str(tmp_path / 'mxnet' / 'models' / f'{name}-{model_store.short_hash(name)}.params'))
    write_image(tmp_path / 'a.jpg', seed=2)
    records = tmp_path / 'd.json'
    assert demo.main([str(tmp_path / 'a.jpg'), '--pretrained', f'gluoncv:{name}', '--thresh', '0',
                      '--json', str(records), '--out-dir', str(tmp_path)]) == 0
    assert 'differs from GluonCV' in caplog.text  # random weights, not the published file
    detections = json.loads(records.read_text())
    assert detections and {d['class'] for d in detections} <= set(net.classes)


def test_shipped_model_finds_the_sample_objects(tmp_path):
    # The shipped model (held-out VOC07 mAP 0.760, scored in pixels) shows 8 of the 13 sample
    # objects at the default 0.5 threshold, with no false alarm (scores 0.81-0.99); it misses a
    # triangle and a rectangle in sample_1003 and three crosses. Four images are too few to rank
    # models, the held-out mAP does that; this checks that the shipped weights load and find most
    # objects without false alarms.
    records = tmp_path / 'd.json'
    result = run_demo('--out-dir', tmp_path, '--json', records)  # no image: examples/images
    assert result.returncode == 0, result.stderr
    detections = json.loads(records.read_text())
    with open(os.path.join(ROOT, 'examples', 'images', 'ground_truth.json')) as f:
        truth = json.load(f)
    found, false_alarms = 0, 0
    for name, objects in truth.items():
        mine = [d for d in detections if os.path.basename(d['image']) == name]
        found += sum(any(matches(d, o) for d in mine) for o in objects)
        false_alarms += sum(not any(matches(d, o) for o in objects) for d in mine)
    total = sum(len(objects) for objects in truth.values())
    assert 2 * found > total, f"found {found} of {total} sample objects"
    assert false_alarms == 0


def matches(detection, truth):
    return detection['class'] == truth['class'] and iou(detection['box'], truth['box']) >= 0.5


def iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union


@pytest.mark.parametrize('script', ['demo', 'evaluate', 'deploy'])
@pytest.mark.parametrize('delay', [0.3, 2.5])
def test_ctrl_c_exits_130_without_a_traceback(prefix, tmp_path, script, delay):
    """Ctrl-C while MXNet loads (0.3 s) or while the script works: one line, exit 130 (before:
    a KeyboardInterrupt traceback, killed by the signal)."""
    import signal
    from ssd.data import synthetic
    write_image(tmp_path / 'a.jpg', seed=1)
    arguments = {'demo': [tmp_path / 'a.jpg'] * 400 + ['--out-dir', tmp_path / 'out', '--backend', 'mxnet'],
                 'evaluate': ['--data-root', tmp_path / 'data', '--num-workers', 0, '--batch-size', 1,
                              '--backend', 'mxnet'],
                 'deploy': ['--onnx', tmp_path / 'm.onnx', '--int8', tmp_path / 'calibration']}[script]
    if script == 'evaluate':
        synthetic.ensure_dataset(str(tmp_path / 'data'), num_train=1, num_test=200, seed=2)
    if script == 'deploy':  # the export, then calibration on 100 images: seconds
        (tmp_path / 'calibration').mkdir()
        for index in range(100):
            shutil.copy(tmp_path / 'a.jpg', tmp_path / 'calibration' / f'{index}.jpg')
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, f'{script}.py'), '--prefix', prefix, '--epoch', '1',
                                *map(str, arguments)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        time.sleep(delay)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 130, err[-3000:]
    assert 'Traceback' not in err and err.strip().splitlines()[-1] == f'{script}.py: interrupted'
    assert not [name for top, _, names in os.walk(tmp_path) for name in names if '.tmp' in name]  # no temporary
