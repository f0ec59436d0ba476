"""Nothing lost: train.py under NaN weights, kill -9, Ctrl-C at any moment and a full disk.

Each test breaks a run on purpose: a poisoned update, kills at random moments, SIGINT during
a checkpoint write, the metrics plot or validation, and a real full file system (a small tmpfs
mounted in a private mount namespace).
"""
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time

import mxnet as mx
import numpy as np
import pytest

import train
from test_train import data_root, log_text  # noqa: F401  (the fixture and helper of the tiny set)
from ssd import checkpoint
from ssd.training import engine
from full_disk import FILL, run_in_tmpfs

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# one batch of 12 images per epoch at 64 pixels: an epoch takes a fraction of a second, a
# checkpoint (13 MB of weights, 26 MB of Adam state) a good part of it
TINY = ['--network', 'mobilenet0.25', '--data-shape', '64', '--batch-size', '12', '--num-workers', '0',
        '--frequent', '0', '--val-interval', '0']


def run_train(data_root, prefix, *extra):
    return train.main(['--data-root', data_root, '--prefix', str(prefix)] + TINY + list(extra))


def sidecar(prefix, epoch):
    with open(checkpoint.sidecar_path(str(prefix), epoch)) as f:
        return json.load(f)


def send_sigint(*_):
    os.kill(os.getpid(), signal.SIGINT)


def test_weights_broken_by_the_last_update_of_an_epoch_are_not_saved(data_root, tmp_path, monkeypatch):
    real_update, updates = mx.mod.Module.update, []

    def poisoning_update(module):  # the second update (the end of epoch 2) leaves a NaN weight
        real_update(module)
        updates.append(1)
        if len(updates) == 2:
            arg, aux = module.get_params()
            arg['mobilenet_conv0_weight'][0] = np.nan
            module.set_params(arg, aux)

    monkeypatch.setattr(mx.mod.Module, 'update', poisoning_update)
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3') == 1
    text = log_text(prefix)
    assert (f'the weights of epoch 2 hold NaN or infinity (mobilenet_conv0_weight); not saved. '
            f'The last good checkpoint is epoch 1 of {prefix}; try a lower --lr.') in text
    assert checkpoint.complete_epochs(str(prefix)) == [1] and not os.path.exists(f'{prefix}-0002.params')
    arg, aux = checkpoint.load_params(f'{prefix}-0001.params')
    assert checkpoint.non_finite_names(arg, aux) == []


def test_a_nan_stop_before_any_save_names_no_checkpoint(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3', '--batch-size', '4', '--lr', '1e30') == 1
    assert 'This run saved no checkpoint; try a lower --lr.' in log_text(prefix)
    assert checkpoint.latest_epoch(str(prefix)) is None


def test_resume_refuses_an_incomplete_epoch_and_warns_without_optimizer_state(data_root, tmp_path):
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '2') == 0
    os.remove(f'{prefix}-0002.states')  # as a kill between the states and the sidecar of a re-save leaves it
    assert run_train(data_root, prefix, '--resume', '2', '--end-epoch', '3') == 2
    assert (f'--resume 2: epoch 2 of {prefix} is incomplete (missing or unreadable: {prefix}-0002.states; '
            f'a save that did not finish, or not written by train.py); the newest complete epoch is 1') \
        in log_text(prefix)
    info = sidecar(prefix, 1)
    os.remove(f'{prefix}-0001.states')  # a dist_sync worker's checkpoint: the state stayed on the servers
    checkpoint.atomic_write(checkpoint.sidecar_path(str(prefix), 1),
                            lambda path: json.dump({**info, 'optimizer_states': False}, open(path, 'w')))
    assert run_train(data_root, prefix, '--resume', '--end-epoch', '2') == 0
    text = log_text(prefix)
    assert f'resuming from epoch 1 of {prefix} (newest complete epoch: 1)' in text
    assert 'epoch 1 was saved without optimizer state: the optimizer (momentum, Adam moments) starts from zero' \
        in text
    assert checkpoint.complete_epochs(str(prefix)) == [1, 2]


@pytest.mark.parametrize('moment', ['checkpoint write', 'metrics plot'])
def test_ctrl_c_while_saving_finishes_the_save_and_exits_130(data_root, tmp_path, monkeypatch, moment):
    if moment == 'checkpoint write':
        real_save = mx.nd.save

        def interrupted_save(path, arrays):
            send_sigint()
            real_save(path, arrays)

        monkeypatch.setattr(mx.nd, 'save', interrupted_save)
    else:
        real_plot = engine.MetricsLog._plot
        monkeypatch.setattr(engine.MetricsLog, '_plot', lambda log, path: (send_sigint(), real_plot(log, path)))
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3') == 130
    assert checkpoint.complete_epochs(str(prefix)) == [1]  # saved once, as a regular epoch
    assert 'interrupted' not in sidecar(prefix, 1) and not os.path.exists(f'{prefix}-0002.params')
    assert f'interrupted after epoch 1: saved {prefix}-0001.params; resume with --resume 1' in log_text(prefix)
    assert open(f'{prefix}-metrics.png', 'rb').read(8) == b'\x89PNG\r\n\x1a\n'
    assert len(open(f'{prefix}-metrics.csv').read().splitlines()) == 2
    assert [n for n in os.listdir(tmp_path) if n.startswith('.')] == []


def test_ctrl_c_during_validation_saves_the_epoch_once(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, 'evaluate_loader', lambda *args: send_sigint() or time.sleep(5))
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3', '--val-interval', '1') == 130
    assert checkpoint.complete_epochs(str(prefix)) == [1] and sidecar(prefix, 1)['interrupted'] is True
    assert f'interrupted during epoch 1: saved {prefix}-0001.params; resume with --resume 1' in log_text(prefix)


def test_ctrl_c_before_the_first_epoch_exits_130_saving_nothing(data_root, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, 'make_loader', lambda *args, **kwargs: send_sigint() or time.sleep(5))
    prefix = tmp_path / 'ssd'
    assert run_train(data_root, prefix, '--end-epoch', '3') == 130
    assert 'interrupted before the first epoch ended: nothing saved' in log_text(prefix)
    assert checkpoint.latest_epoch(str(prefix)) is None


@pytest.mark.parametrize('seconds', [0.2, 0.6, 1.0])
def test_ctrl_c_while_the_script_starts_exits_130_without_a_traceback(data_root, tmp_path, seconds):
    # within about 2 s of the start, train.py is still importing MXNet
    process = start_training(data_root, tmp_path / 'ssd')
    time.sleep(seconds)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1].decode(errors='replace')
    assert process.returncode == 130 and 'Traceback' not in stderr, stderr[-3000:]
    assert checkpoint.latest_epoch(str(tmp_path / 'ssd')) in (None, 1)


def start_training(data_root, prefix, *extra):
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--data-root', data_root, '--prefix', str(prefix),
               '--end-epoch', '60'] + TINY + list(extra)
    return subprocess.Popen(command, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS='1'), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for_sidecar(process, prefix, epoch, timeout=120):
    """Until the run has committed epoch ``epoch`` (its sidecar exists) or has ended."""
    deadline = time.time() + timeout
    while not os.path.exists(checkpoint.sidecar_path(str(prefix), epoch)) and process.poll() is None:
        assert time.time() < deadline, f'epoch {epoch} not committed within {timeout} s'
        time.sleep(0.02)


def check_committed_epochs(prefix):
    """Every complete epoch loads: weights, Adam state and sidecar; returns the newest."""
    complete = checkpoint.complete_epochs(str(prefix))
    for epoch in complete:
        arg, aux = checkpoint.load_params(checkpoint.params_path(str(prefix), epoch))
        assert arg and aux and not checkpoint.non_finite_names(arg, aux)
        assert sidecar(prefix, epoch)['epoch'] == epoch
        with open(checkpoint.states_path(str(prefix), epoch), 'rb') as f:
            assert pickle.load(f)  # MXNet's Updater states: a pickled dict of NDArrays
    return complete[-1]


def test_kill_9_and_ctrl_c_at_random_moments_never_leave_a_broken_newest_epoch(data_root, tmp_path):
    """Eight runs stopped at a random moment after their first new commit: odd ones by SIGKILL,
    even ones by SIGINT to the whole process group (a terminal's Ctrl-C, data workers included).
    Each run resumes from the newest complete epoch and removes the temporaries of the last kill."""
    prefix, moments = tmp_path / 'ssd', random.Random(14)
    newest, stale, resumed = 0, [], []
    for attempt in range(9):
        last = attempt == 8  # the last run ends on its own, one epoch after the newest commit
        ctrl_c = attempt % 2 == 1
        extra = (['--resume'] if newest else []) + (['--num-workers', '2'] if ctrl_c else []) + \
            (['--end-epoch', str(newest + 1)] if last else [])
        process = start_training(data_root, prefix, *extra)
        if not last:
            wait_for_sidecar(process, prefix, newest + 1)
            time.sleep(moments.uniform(0, 1.0))
            assert process.poll() is None, f'run {attempt} ended before the stop: ' + \
                process.communicate()[1].decode(errors='replace')[-3000:]
            os.killpg(process.pid, signal.SIGINT if ctrl_c else signal.SIGKILL)
        stderr = process.communicate(timeout=120)[1].decode(errors='replace')
        if newest:
            assert f'resuming from epoch {newest} of {prefix} (newest complete epoch: {newest})' in stderr
            assert 'optimizer state restored' in stderr
        for path in stale:
            assert f'removed {path}, a temporary file of a run that was killed' in stderr
        if ctrl_c or last:
            assert process.returncode == (0 if last else 130) and 'Traceback' not in stderr, stderr[-3000:]
            assert stderr.count('interrupted ') == (0 if last else 1), stderr[-3000:]
        else:
            assert process.returncode == -signal.SIGKILL
        stale = sorted(str(tmp_path / n) for n in os.listdir(tmp_path) if n.startswith('.ssd-'))
        newest = check_committed_epochs(prefix)
        resumed.append(newest)
    assert stale == [] and checkpoint.latest_epoch(str(prefix)) == resumed[-2] + 1
    assert resumed == sorted(resumed) and len(set(resumed)) == len(resumed)  # every run committed progress


def tmpfs_training(data_root, folder, size, copy_to, *runs):
    """``train.py`` runs (argument lists; ``None``: fill what space is left) in a tmpfs of ``size``
    bytes at ``folder``; what it holds at the end is copied to ``copy_to``. Returns the last run's
    exit code and stderr."""
    train_py = [sys.executable, os.path.join(ROOT, 'train.py'), '--data-root', data_root, '--prefix', f'{folder}/ssd']
    steps = [FILL if run is None else ' '.join(train_py + TINY + list(run)) for run in runs]
    return run_in_tmpfs(folder, size, steps, copy_to)


@pytest.mark.parametrize('failing', ['params', 'states', 'symbol.json'])
def test_a_full_disk_keeps_the_previous_checkpoint_and_says_so_in_one_line(data_root, tmp_path, failing):
    """Epoch 2 finds room for half of its weights (MXNet's writer fails), for its weights and half
    of its optimizer state (Python's writer fails), or no room at all (a resumed run: the shared
    symbol file, which MXNet's own Symbol.save would leave empty without an error)."""
    sizes = tmp_path / 'sizes'
    assert run_train(data_root, sizes / 'ssd', '--end-epoch', '1') == 0
    used = sum(os.path.getsize(sizes / name) + 8192 for name in os.listdir(sizes))
    params, states = os.path.getsize(sizes / 'ssd-0001.params'), os.path.getsize(sizes / 'ssd-0001.states')
    size = used + {'params': params // 2, 'states': params + states // 2, 'symbol.json': 0}[failing]
    runs = [['--end-epoch', '3']] if failing != 'symbol.json' else [['--end-epoch', '1'], None,
                                                                     ['--resume', '--end-epoch', '2']]
    disk, after = tmp_path / 'disk', tmp_path / 'after'
    disk.mkdir()
    after.mkdir()
    result = tmpfs_training(data_root, disk, size + 4 * 8192, after, *runs)
    assert result.returncode == 1, result.stderr[-3000:]
    name = f'ssd-0002.{failing}' if failing != 'symbol.json' else 'ssd-symbol.json'
    assert result.stderr.strip().splitlines()[-1].endswith(f' no space left writing {disk}/{name}')
    assert 'Traceback' not in result.stderr and 'Error' not in result.stderr, result.stderr[-3000:]
    assert sorted(os.listdir(after)) == ['ssd-0001.json', 'ssd-0001.params', 'ssd-0001.states', 'ssd-metrics.csv',
                                         'ssd-metrics.png', 'ssd-symbol.json', 'ssd-train.log']
    assert checkpoint.complete_epochs(str(after / 'ssd')) == [1]
    arg, aux = checkpoint.load_params(str(after / 'ssd-0001.params'))
    assert arg and not checkpoint.non_finite_names(arg, aux)
    graphs = [mx.sym.load(str(folder / 'ssd-symbol.json')) for folder in (after, sizes)]
    assert graphs[0].list_arguments() == graphs[1].list_arguments()  # the shared graph file is whole
