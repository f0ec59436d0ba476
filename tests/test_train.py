"""train.py and evaluate.py end to end on a tiny synthetic set (mobilenet0.25, small inputs)."""
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

import evaluate
import train
from ssd.data import synthetic
from ssd.training import engine

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--network', 'mobilenet0.25', '--data-shape', '128', '--batch-size', '4', '--num-workers', '0',
        '--frequent', '0', '--lr', '0.005']


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('data') / 'synthetic')
    synthetic.ensure_dataset(root, num_train=12, num_test=4, seed=5)
    return root


def run_train(data_root, prefix, *extra):
    return train.main(['--data-root', data_root, '--prefix', str(prefix)] + TINY + list(extra))


def log_text(prefix):
    with open(f'{prefix}-train.log') as f:
        return f.read()


def test_train_writes_checkpoints_metrics_and_resumes(data_root, tmp_path):
    prefix = tmp_path / 'run' / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1') == 0
    for suffix in ('-symbol.json', '-0001.params', '-0001.states', '-0001.json', '-best.params',
                   '-metrics.csv', '-metrics.png'):
        assert os.path.isfile(f'{prefix}{suffix}'), suffix
    symbol = mx.sym.load(f'{prefix}-symbol.json')
    assert '_contrib_MultiBox' not in symbol.tojson()
    # the losses' graph only: get_symbol_train's monitoring detections are neither trained nor saved
    assert symbol.list_outputs() == ['cls_prob_output', 'loc_loss_output', 'cls_label_output']
    assert 'det_out' not in symbol.tojson() and '_contrib_box_nms' not in symbol.tojson()
    assert run_train(data_root, prefix, '--resume', '1', '--end-epoch', '2') == 0
    assert 'optimizer state restored' in log_text(prefix)
    with open(f'{prefix}-metrics.csv') as f:
        rows = f.read().strip().splitlines()
    assert rows[0].startswith('epoch,CrossEntropy,SmoothL1,lr,val_mAP') and len(rows) == 3
    info = json.load(open(f'{prefix}-0002.json'))
    assert info['epoch'] == 2 and info['class_names'] == list(synthetic.CLASSES)
    assert 0 <= info['val_mAP'] <= 1 and np.isfinite(info['CrossEntropy'])
    assert info['lr'] == pytest.approx(0.005)  # the optimizer's rate after the one-epoch warm-up


def test_validation_runs_every_val_interval_epochs_and_after_the_last(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3', '--val-interval', '2') == 0
    with open(f'{prefix}-metrics.csv') as f:
        maps = [row['val_mAP'] for row in csv.DictReader(f)]
    assert maps[0] == '' and all(0 <= float(m) <= 1 for m in maps[1:])
    assert 'epoch 1 validation' not in log_text(prefix) and 'epoch 3 validation' in log_text(prefix)


def test_two_cpu_contexts_train_data_parallel(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--num-cpu-contexts', '2', '--val-interval', '0') == 0
    assert '[cpu(0), cpu(1)]' in log_text(prefix)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    assert run_train(data_root, prefix, '--resume', '1', '--end-epoch', '3', '--lr', '1e30') == 1
    text = log_text(prefix)
    assert 'non-finite loss at epoch 2, batch' in text and 'last good checkpoint is epoch 1' in text
    assert not os.path.exists(f'{prefix}-0002.params')


def test_ctrl_c_saves_before_exiting(data_root, tmp_path, monkeypatch):
    calls = []
    real = engine.batch_losses

    def interrupted(outputs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(outputs)

    monkeypatch.setattr(engine, 'batch_losses', interrupted)
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '2') == 130
    assert json.load(open(f'{prefix}-0001.json'))['interrupted'] is True
    assert os.path.isfile(f'{prefix}-0001.params') and os.path.isfile(f'{prefix}-0001.states')


def broken_copy(data_root, tmp_path, damage):
    """A copy of the synthetic set with ``damage(path)`` applied to the images it selects."""
    root = str(tmp_path / 'copy')
    shutil.copytree(data_root, root)
    folder = os.path.join(root, 'VOC2007', 'JPEGImages')
    return root, [path for path in (os.path.join(folder, name) for name in sorted(os.listdir(folder)))
                  if damage(path)]


def truncate(path, keep=0.5):
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])
    return True


def test_unreadable_images_are_skipped_and_counted(data_root, tmp_path):
    png = png_bytes(tmp_path / 'shape.png')

    def damage(path):
        name = os.path.basename(path)
        if name == '000002.jpg':
            with open(path, 'wb') as f:
                f.write(b'\xff\xd8 truncated')
        elif name == '000003.jpg':  # OpenCV alone decodes it, grey-filled
            truncate(path)
        elif name == '000004.jpg':  # a truncated PNG named .jpg
            with open(path, 'wb') as f:
                f.write(png[:len(png) // 2])
        return name in ('000002.jpg', '000003.jpg', '000004.jpg')

    root, bad = broken_copy(data_root, tmp_path, damage)
    prefix = tmp_path / 'ssd'
    assert run_train(root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    text = log_text(prefix)
    for path in bad:
        assert f'skipped unreadable image {path}' in text
    assert '3 unreadable images skipped' in text


def png_bytes(path):
    import cv2
    image, _ = synthetic.draw_image(np.random.RandomState(3))
    cv2.imwrite(str(path), image)
    return path.read_bytes()


@pytest.mark.parametrize('workers', ['0', '2'])
def test_a_set_without_any_decodable_image_exits_2(data_root, tmp_path, workers):
    root, bad = broken_copy(data_root, tmp_path, lambda path: truncate(path, keep=0.02))
    assert len(bad) == 16
    prefix = tmp_path / 'ssd'
    assert run_train(root, prefix, '--end-epoch', '1', '--num-workers', workers) == 2
    assert 'none of the 12 images of the set can be decoded (last: ' in log_text(prefix)
    assert not os.path.exists(f'{prefix}-0001.params')


def test_an_empty_validation_set_exits_2_unless_validation_is_off(data_root, tmp_path):
    root = str(tmp_path / 'copy')
    shutil.copytree(data_root, root)
    open(os.path.join(root, 'VOC2007', 'ImageSets', 'Main', 'test.txt'), 'w').close()
    prefix = tmp_path / 'ssd'
    assert run_train(root, prefix, '--end-epoch', '1') == 2
    assert ('the validation set 2007_test has no images; pass --val-interval 0 to train without validation'
            in log_text(prefix))
    assert run_train(root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0


def test_resume_from_a_truncated_checkpoint_exits_2_naming_it(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    truncate(f'{prefix}-0001.params')
    assert run_train(data_root, prefix, '--resume', '1', '--end-epoch', '2') == 2
    assert f'checkpoint {prefix}-0001.params is damaged or not an MXNet .params file' in log_text(prefix)


@pytest.mark.parametrize('damage, message', [
    (None, '--pretrained {path} does not exist'),
    (b'garbage', "--pretrained {path} is not a GluonCV ImageNet weights file of mobilenet0.25's backbone "
                 "(MXNetError: Check failed: fi->Read(&header): Invalid NDArray file format)"),
    ('ssd', "--pretrained {path} is not a GluonCV ImageNet weights file of mobilenet0.25's backbone "
            "(Parameter 'conv0_weight' is missing in file: {path})"),
])
def test_a_pretrained_file_that_is_missing_or_not_a_backbone_exits_2_naming_it(data_root, tmp_path, damage, message):
    # before: MXNet's and Gluon's tracebacks, exit 1
    path = tmp_path / 'backbone.params'
    if damage == 'ssd':  # a whole SSD checkpoint, not GluonCV's ImageNet backbone
        mx.nd.save(str(path), {'arg:multi_feat_2_conv_1x1_conv_weight': mx.nd.zeros((2, 2))})
    elif damage:
        path.write_bytes(damage)
    assert run_train(data_root, tmp_path / 'x', '--pretrained', str(path), '--end-epoch', '1') == 2
    assert message.format(path=path) in log_text(tmp_path / 'x')


def test_resume_latest_with_nothing_left_to_train_exits_2(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    # before: "resuming from epoch 1", then exit 0 without training anything
    assert run_train(data_root, prefix, '--resume', '--end-epoch', '1') == 2
    assert (f'--resume: the newest complete epoch of {prefix} is 1: nothing to train up to --end-epoch 1; '
            f'pass a later --end-epoch') in log_text(prefix)


def test_a_training_set_without_any_object_of_the_classes_exits_2(data_root, tmp_path):
    # before: every object "unknown class", then a run that learnt background only, exit 0
    assert run_train(data_root, tmp_path / 'x', '--class-names', 'dog,cat', '--end-epoch', '1') == 2
    assert ("the training set holds no object of the classes ['dog', 'cat'] (12 images); check --class-names "
            "and the annotations") in log_text(tmp_path / 'x')
    assert not os.path.exists(f"{tmp_path / 'x'}-0001.params")


def test_a_network_too_large_for_the_memory_exits_2_saying_so(data_root, tmp_path):
    # before: MXNet's "simple_bind error ... Failed to allocate CPU Memory" traceback, exit 1.
    # 100000 pixels a side: MXNet refuses the first allocation (480 GB of input) at once
    assert run_train(data_root, tmp_path / 'x', '--data-shape', '100000', '--end-epoch', '1') == 2
    assert ('not enough memory on [cpu(0)] for mobilenet0.25 at --data-shape 100000 with --batch-size 4: lower '
            'them') in log_text(tmp_path / 'x')


def test_a_batch_smaller_than_its_devices_exits_2_naming_both(data_root, tmp_path):
    # before: MXNet's "Too many slices. Some splits are empty." (also in evaluate.py)
    assert run_train(data_root, tmp_path / 'x', '--num-cpu-contexts', '8', '--end-epoch', '1') == 2
    assert ('--batch-size 4 is smaller than the 8 devices it is split over (--gpus / --num-cpu-contexts): each '
            'needs at least one image') in log_text(tmp_path / 'x')


def test_finetune_to_fewer_classes_reinitialises_only_the_class_predictors(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    before = mx.nd.load(f'{prefix}-0001.params')
    assert run_train(data_root, prefix, '--finetune', '1', '--end-epoch', '2', '--class-names', 'circle,cross',
                     '--lr', '0', '--val-interval', '0', '--wd', '0') == 0
    after = mx.nd.load(f'{prefix}-0002.params')
    changed = sorted(k for k in before if before[k].shape != after[k].shape)
    assert changed and all('_cls_pred_conv' in k for k in changed)
    same = [k for k in before if before[k].shape == after[k].shape and k.startswith('arg:')]
    assert all(np.array_equal(before[k].asnumpy(), after[k].asnumpy()) for k in same)  # lr 0: untouched
    assert 're-initialised: ' in log_text(prefix)


def test_a_class_count_that_does_not_fit_the_class_names_exits_2(data_root, tmp_path):
    # the option checks themselves are in test_options.py
    assert run_train(data_root, tmp_path / 'x', '--num-class', '7', '--end-epoch', '1') == 2
    assert 'does not match the 4 class names' in log_text(tmp_path / 'x')


def test_a_data_shape_the_network_cannot_take_exits_2_naming_the_smallest(data_root, tmp_path):
    # TINY trains mobilenet0.25 at 128, a size it takes; SSD300's windows need 257 pixels
    assert run_train(data_root, tmp_path / 'x', '--network', 'vgg16_reduced', '--end-epoch', '1') == 2
    assert ('data shape 128x128 is too small for vgg16_reduced: the window of layer multi_feat_4_conv_3x3_conv is '
            'larger than its input; the smallest square input it takes is ') in log_text(tmp_path / 'x')


def test_evaluate_prints_ap_table_and_saves_pixel_detections(data_root, tmp_path, capsys):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    out_file = tmp_path / 'detections.json'
    assert evaluate.main(['--data-root', data_root, '--prefix', str(prefix), '--epoch', '1', '--batch-size', '3',
                          '--num-workers', '0', '--save-detections', str(out_file), '--no-voc07']) == 0
    printed = capsys.readouterr().out
    assert 'area-based AP at IoU 0.5, in pixels, 4 images' in printed and 'mAP' in printed
    for name in synthetic.CLASSES:
        assert name in printed
    detections = json.load(open(out_file))
    assert detections and set(detections[0]) == {'image', 'set', 'class', 'score', 'box'}
    assert max(max(d['box']) for d in detections) > 1.5  # pixels, not normalized coordinates
    assert evaluate.main(['--data-root', data_root, '--prefix', str(tmp_path / 'none')]) == 2


def test_evaluate_reports_and_skips_a_broken_annotation(data_root, tmp_path, capsys):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '1', '--val-interval', '0') == 0
    copy = tmp_path / 'copy'
    shutil.copytree(data_root, copy)
    test_names = (copy / 'VOC2007' / 'ImageSets' / 'Main' / 'test.txt').read_text().split()
    (copy / 'VOC2007' / 'Annotations' / f'{test_names[0]}.xml').write_text('<annotation><object>')
    assert evaluate.main(['--data-root', str(copy), '--prefix', str(prefix), '--epoch', '1',
                          '--num-workers', '0']) == 0
    printed = capsys.readouterr()
    assert f'{test_names[0]}.xml: unreadable annotation' in printed.err
    assert f'{len(test_names) - 1} images' in printed.out


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_dist_sync_on_loopback(data_root, tmp_path):
    """MXNet's parameter server: a scheduler, one server and two workers on 127.0.0.1."""
    env = dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(free_port()),
               DMLC_NUM_SERVER='1', DMLC_NUM_WORKER='2', PS_VERBOSE='0', OMP_NUM_THREADS='1')
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--data-root', data_root, '--kv-store',
               'dist_sync', '--end-epoch', '1', '--val-interval', '0'] + TINY
    roles = [('scheduler', None), ('server', None), ('worker', 0), ('worker', 1)]
    processes = []
    for role, rank in roles:
        role_env = dict(env, DMLC_ROLE=role)
        prefix = ['--prefix', str(tmp_path / f'worker{rank}' / 'ssd')] if role == 'worker' else []
        processes.append(subprocess.Popen(command + prefix, env=role_env, cwd=ROOT, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 240  # for the whole run, not per process
        outputs = [p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0].decode(errors='replace')
                   for p in processes]
    finally:
        for p in processes:
            p.kill()
    for (role, _), p, out in zip(roles, processes, outputs):
        assert p.returncode == 0, f'{role} failed:\n{out[-3000:]}'
    logs = ''.join(log_text(tmp_path / f'worker{k}' / 'ssd') for k in (0, 1))
    for rank in (0, 1):  # the scheduler assigns the ranks; each worker reads half of the 12 images
        assert os.path.isfile(tmp_path / f'worker{rank}' / 'ssd-0001.params')
        assert f'worker {rank} of 2: 1 batches per epoch' in logs
    first = mx.nd.load(str(tmp_path / 'worker0' / 'ssd-0001.params'))
    second = mx.nd.load(str(tmp_path / 'worker1' / 'ssd-0001.params'))
    weights = [k for k in first if k.startswith('arg:')]  # BatchNorm statistics stay per worker
    assert weights and all(np.allclose(first[k].asnumpy(), second[k].asnumpy(), atol=1e-5) for k in weights)


def test_dist_sync_lost_worker_ends_every_survivor(data_root, tmp_path):
    """Three workers, one killed mid-run: the scheduler reports the lost worker and exits 1, then
    the server and one worker report the lost scheduler and exit 1; the last worker, blocked in
    the parameter server, stops on Ctrl-C (exit 130) before its own watch would end it."""
    env = dict(os.environ, DMLC_PS_ROOT_URI='127.0.0.1', DMLC_PS_ROOT_PORT=str(free_port()),
               DMLC_NUM_SERVER='1', DMLC_NUM_WORKER='3', PS_VERBOSE='0', OMP_NUM_THREADS='1',
               MULTIBOX_DIST_TIMEOUT='24')  # nodes lost after 12 s of silence
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--data-root', data_root, '--kv-store',
               'dist_sync', '--end-epoch', '1000', '--val-interval', '0'] + TINY
    names = ['scheduler', 'server', 'worker0', 'worker1', 'worker2']
    processes, outputs = {}, {}
    for name in names:
        role = name.rstrip('012')
        prefix = ['--prefix', str(tmp_path / name / 'ssd')] if role == 'worker' else []
        outputs[name] = open(tmp_path / f'{name}.out', 'w+')
        processes[name] = subprocess.Popen(command + prefix, env=dict(env, DMLC_ROLE=role), cwd=ROOT,
                                           stdout=outputs[name], stderr=subprocess.STDOUT)
    try:
        logs = [tmp_path / f'worker{k}' / 'ssd-train.log' for k in range(3)]
        for _ in range(240):  # all workers train (epoch 2 logged), or give up after ~2 minutes
            if all(log.is_file() and 'epoch 2:' in log.read_text() for log in logs):
                break
            time.sleep(0.5)
        assert all('epoch 2:' in log.read_text() for log in logs), 'the run did not start'
        processes['worker2'].kill()
        # worker 0 ends its step (and maybe an epoch's checkpoint), then waits for worker 2; its
        # Ctrl-C grace (10 s) ends well before its watch would notice the scheduler gone (~26 s)
        with pytest.raises(subprocess.TimeoutExpired):
            processes['worker0'].wait(timeout=8)
        processes['worker0'].send_signal(signal.SIGINT)
        codes = {name: processes[name].wait(timeout=60) for name in names[:-1]}
    finally:
        for process in processes.values():
            process.kill()
    text = {}
    for name, output in outputs.items():
        output.seek(0)
        text[name] = output.read()
    assert codes == {'scheduler': 1, 'server': 1, 'worker0': 130, 'worker1': 1}, text
    assert 'scheduler: lost 1 worker node(s) of the parameter server, no heartbeat for 12 s' in text['scheduler']
    for name in ('server', 'worker1'):
        assert 'lost the scheduler of the parameter server' in text[name], text[name]
    assert 'worker: interrupted' in text['worker0']
    assert all('Traceback' not in text[name] for name in names[:-1])


@pytest.mark.parametrize('value', ['soon', '-1', 'nan', 'inf'])
def test_bad_dist_timeout_is_refused_by_name(value):
    env = dict(os.environ, DMLC_ROLE='worker', MULTIBOX_DIST_TIMEOUT=value)
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), '--help'], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"MULTIBOX_DIST_TIMEOUT must be a number of seconds >= 0 (0: wait forever), got '{value}'" \
        in result.stderr
    assert 'Traceback' not in result.stderr
