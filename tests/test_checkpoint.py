"""The checkpoint commit protocol, stale temporaries, the disk-full message and held-back Ctrl-C."""
import errno
import json
import os
import signal
import subprocess
import sys
from types import SimpleNamespace

import mxnet as mx
import numpy as np
import pytest

from ssd import checkpoint, interrupts

pytestmark = pytest.mark.unit


def save_epoch(prefix, epoch, states=b'state', extra=None):
    symbol = mx.sym.FullyConnected(mx.sym.var('data'), num_hidden=2, name='fc')
    arg = {'fc_weight': mx.nd.full((2, 3), epoch), 'fc_bias': mx.nd.zeros(2)}
    write_states = None if states is None else (lambda path: open(path, 'wb').write(states))
    checkpoint.save(str(prefix), epoch, symbol, arg, {}, save_states=write_states,
                    extra={'epoch': epoch} if extra is None else extra)


def test_an_epoch_becomes_visible_only_once_its_sidecar_is_written(tmp_path):
    prefix = str(tmp_path / 'ssd')
    save_epoch(prefix, 1)
    assert json.load(open(f'{prefix}-0001.json')) == {'epoch': 1, 'optimizer_states': True}
    # a kill after the params of epoch 2 were renamed into place, before its states and sidecar
    mx.nd.save(f'{prefix}-0002.params', {'arg:fc_weight': mx.nd.ones((2, 3))})
    assert checkpoint.missing_parts(prefix, 2) == [f'{prefix}-0002.json']
    assert checkpoint.complete_epochs(prefix) == [1] and checkpoint.latest_epoch(prefix) == 1
    assert checkpoint.resume_epoch(prefix, 'latest') == 1
    with pytest.raises(ValueError) as error:
        checkpoint.resume_epoch(prefix, 2)
    assert str(error.value).startswith(f'--resume 2: epoch 2 of {prefix} is incomplete (missing or unreadable: '
                                       f'{prefix}-0002.json;')
    assert 'the newest complete epoch is 1' in str(error.value)
    # a sidecar that says states were saved commits nothing while the states are missing
    os.remove(f'{prefix}-0001.states')
    assert checkpoint.missing_parts(prefix, 1) == [f'{prefix}-0001.states']
    assert checkpoint.latest_epoch(prefix) is None and checkpoint.saved_states(prefix, 1) is None
    with pytest.raises(ValueError, match='has no complete epoch'):
        checkpoint.resume_epoch(prefix, 'latest')


def test_an_epoch_saved_without_optimizer_state_is_complete(tmp_path):
    prefix = str(tmp_path / 'ssd')
    save_epoch(prefix, 3, states=None)  # as a dist_sync worker saves: the state lives on the servers
    assert json.load(open(f'{prefix}-0003.json'))['optimizer_states'] is False
    assert checkpoint.complete_epochs(prefix) == [3] and checkpoint.saved_states(prefix, 3) is None
    save_epoch(prefix, 4)
    assert checkpoint.saved_states(prefix, 4) == f'{prefix}-0004.states'


def test_plain_mxnet_checkpoints_without_sidecars_stay_loadable(tmp_path):
    prefix = str(tmp_path / 'plain')
    for epoch in (2, 5):
        mx.nd.save(checkpoint.params_path(prefix, epoch), {'arg:w': mx.nd.ones(1)})
    assert checkpoint.latest_epoch(prefix) == 5 and checkpoint.complete_epochs(prefix) == []


def test_a_failed_save_uncommits_and_removes_its_epoch_and_keeps_the_others(tmp_path):
    prefix = str(tmp_path / 'ssd')
    save_epoch(prefix, 1)
    save_epoch(prefix, 2)

    def no_space(path):
        with open(path, 'wb') as f:
            f.write(b'half')
        raise OSError(errno.ENOSPC, 'No space left on device')

    symbol = mx.sym.load(f'{prefix}-symbol.json')
    with pytest.raises(checkpoint.WriteError) as error:  # epoch 2 saved again, its states fail
        checkpoint.save(prefix, 2, symbol, {'fc_weight': mx.nd.ones((2, 3))}, {}, save_states=no_space,
                        extra={'epoch': 2})
    assert str(error.value) == f'no space left writing {prefix}-0002.states'
    assert error.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmp_path)) == ['ssd-0001.json', 'ssd-0001.params', 'ssd-0001.states',
                                           'ssd-symbol.json']
    assert checkpoint.load_params(f'{prefix}-0001.params')[0]['fc_weight'].asnumpy().max() == 1


def test_mxnet_write_failures_on_a_full_disk_become_the_no_space_message(tmp_path, monkeypatch):
    path = str(tmp_path / 'ssd-0001.params')

    def incomplete(temporary):
        raise mx.base.MXNetError('[12:00:00] src/io/local_filesys.cc:38: Check failed: ... '
                                 'FileStream.Write incomplete')

    monkeypatch.setattr(checkpoint.shutil, 'disk_usage', lambda folder: SimpleNamespace(free=4096))
    with pytest.raises(checkpoint.WriteError, match=f'^no space left writing {path}$'):
        checkpoint.atomic_write(path, incomplete)
    monkeypatch.setattr(checkpoint.shutil, 'disk_usage', lambda folder: SimpleNamespace(free=50 << 20))
    with pytest.raises(mx.base.MXNetError, match='Write incomplete'):  # space left: another cause
        checkpoint.atomic_write(path, incomplete)
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    finished = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True,
                              text=True, check=True)
    dead = int(finished.stdout)
    names = {f'.ssd-0003.params.tmp{dead}.a1b2c3d4': False,  # left by a killed run
             '.ssd-0002.states.k3j4h5g6': False,  # left by a version without PIDs in the name
             f'.ssd-0004.params.tmp{os.getpid()}.e5f6g7h8': True,  # a save in progress
             f'.other-0001.params.tmp{dead}.a1b2c3d4': True,  # another prefix
             'ssd-0001.params': True}
    for name in names:
        (tmp_path / name).write_bytes(b'x')
    removed = checkpoint.remove_stale_temporaries(str(tmp_path / 'ssd'))
    assert sorted(removed) == sorted(str(tmp_path / n) for n, kept in names.items() if not kept)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, kept in names.items() if kept)


def test_non_finite_names_lists_nan_and_infinite_arrays():
    arg = {'a': mx.nd.array([1, np.nan]), 'b': mx.nd.ones(2), 'c': mx.nd.array([-np.inf])}
    assert checkpoint.non_finite_names(arg, {'d': mx.nd.array([np.inf])}) == ['a', 'c', 'd']
    assert checkpoint.non_finite_names({'b': mx.nd.ones(2)}, {}) == []


def test_ctrl_c_inside_a_deferred_block_waits_for_its_end():
    before = signal.getsignal(signal.SIGINT)
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            with interrupts.deferred():  # nested: only the outermost block raises
                steps.append('inner done')
            steps.append('outer done')
    assert steps == ['inner done', 'outer done'] and signal.getsignal(signal.SIGINT) is before
    with interrupts.deferred(then_raise=False):  # the save made while stopping: the Ctrl-C is dropped
        os.kill(os.getpid(), signal.SIGINT)
        steps.append('stopping save done')
    with pytest.raises(ValueError):  # an error of the block is not replaced by the interrupt
        with interrupts.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            raise ValueError('write failed')
    with interrupts.deferred():  # the flag of the dropped Ctrl-Cs does not leak into the next block
        steps.append('quiet block done')
    assert steps[-2:] == ['stopping save done', 'quiet block done']


def test_exit_on_ctrl_c_names_the_script_and_exits_130(capsys):
    previous = signal.getsignal(signal.SIGINT)
    try:
        interrupts.exit_on_ctrl_c('demo.py')
        with pytest.raises(SystemExit) as stopped:
            signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
        assert stopped.value.code == 130 and capsys.readouterr().err == 'demo.py: interrupted\n'
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job's ignored SIGINT stays ignored
        interrupts.exit_on_ctrl_c('demo.py')
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
