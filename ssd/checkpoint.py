"""MXNet checkpoints that survive a crash: ``PREFIX-symbol.json``, ``PREFIX-%04d.params``,
``PREFIX-%04d.states`` and the JSON sidecar ``PREFIX-%04d.json``.

The names are MXNet's own (``mx.model.save_checkpoint``), so every script and plain MXNet load
them. Each file is written to a temporary ``.NAME.tmpPID.*`` beside the target, flushed to disk
and renamed into place, so no file is ever half written. An epoch is *committed* by its sidecar,
written last: it records whether optimizer state was saved, and an epoch counts as complete
only when the sidecar and every file it lists exist. A run killed mid-save therefore leaves the
previous epochs intact and the new one invisible to ``--resume`` and :func:`latest_epoch`.
"""
import errno
import json
import os
import re
import shutil
import tempfile

import mxnet as mx
import numpy as np

from ssd import interrupts

__all__ = ['WriteError', 'atomic_write', 'save', 'save_arrays', 'load_params', 'load_trained', 'save_best',
           'params_path', 'states_path', 'sidecar_path', 'latest_epoch', 'complete_epochs', 'missing_parts',
           'saved_states', 'resume_epoch', 'remove_stale_temporaries', 'non_finite_names']

STATES_KEY = 'optimizer_states'  # the sidecar's record of whether PREFIX-%04d.states belongs to the epoch
_TEMPORARY = re.compile(r'\.tmp(\d+)\.\w+$')  # atomic_write's temporary names end in .tmpPID.RANDOM
_LEGACY_TEMPORARY = re.compile(r'\.(params|states|json|csv|png)\.\w{8}$')  # before PIDs were in them


class WriteError(OSError):
    """A file could not be written for lack of space (``errno`` ENOSPC); the message names it."""

    def __init__(self, path):
        super().__init__(errno.ENOSPC, f'no space left writing {path}', path)

    def __str__(self):
        return self.strerror


def atomic_write(path, write):
    """Call ``write(temporary_path)``, flush the result to disk, then rename it to ``path``.

    Raises :class:`WriteError` ("no space left writing PATH") when the disk or quota is full;
    ``path`` is then unchanged and the temporary file removed.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    temporary = None
    try:
        try:
            handle, temporary = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.tmp{os.getpid()}.', dir=folder)
            os.close(handle)
            write(temporary)
            _fsync(temporary)
        except (OSError, mx.base.MXNetError) as error:
            if _disk_full(error, folder):
                raise WriteError(path) from None
            raise
        os.chmod(temporary, _new_file_mode())  # mkstemp's files are private (0600); others are not
        os.replace(temporary, path)
        try:
            _fsync(folder)  # the rename itself survives a power cut
        except OSError:  # some file systems cannot sync a folder; the file itself is on disk
            pass
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.remove(temporary)


def _fsync(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _disk_full(error, folder):
    """Whether a failed write ran out of space. MXNet's writer (``nd.save``, :func:`save_arrays`)
    raises MXNetError "FileStream.Write incomplete" without an errno: then the free space decides."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return 'Write incomplete' in str(error) and shutil.disk_usage(folder).free < 1 << 20


def _new_file_mode():
    """The mode ``open(path, 'w')`` would give a new file: 0666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def params_path(prefix, epoch):
    return f'{prefix}-{epoch:04d}.params'


def states_path(prefix, epoch):
    return f'{prefix}-{epoch:04d}.states'


def sidecar_path(prefix, epoch):
    return f'{prefix}-{epoch:04d}.json'


def save(prefix, epoch, symbol, arg_params, aux_params, save_states=None, extra=None):
    """Write the symbol, the parameters, (if given) the optimizer states, then the JSON sidecar
    ``extra`` that commits the epoch. Ctrl-C waits until the save is done.

    A failed save (disk full...) removes what it wrote of this epoch: the previous epochs stay
    as they were and this one does not exist.
    """
    with interrupts.deferred():
        _remove(sidecar_path(prefix, epoch))  # un-commit an earlier save of this epoch before overwriting it
        try:
            atomic_write(f'{prefix}-symbol.json', lambda path: _write_text(path, symbol.tojson()))
            arrays = {f'arg:{k}': v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
            arrays.update({f'aux:{k}': v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
            atomic_write(params_path(prefix, epoch), lambda path: save_arrays(path, arrays))
            if save_states is not None:
                atomic_write(states_path(prefix, epoch), save_states)
            if extra is not None:
                info = {**extra, STATES_KEY: save_states is not None}
                atomic_write(sidecar_path(prefix, epoch), lambda path: _dump_json(path, info))
        except BaseException:
            for path in (params_path(prefix, epoch), states_path(prefix, epoch)):
                _remove(path)
            raise


def _remove(path):
    if os.path.exists(path):
        os.remove(path)


def non_finite_names(arg_params, aux_params):
    """Names of the parameters holding NaN or infinity."""
    return [name for name, array in {**arg_params, **aux_params}.items() if not np.isfinite(array.asnumpy()).all()]


def _dump_json(path, value):
    with open(path, 'w') as f:
        json.dump(value, f, indent=1)


def _write_text(path, text):
    # not Symbol.save: like nd.save, MXNet's file stream ignores a failed final flush, and on a
    # full disk it leaves a short or empty file without an error; Python's close() raises ENOSPC
    with open(path, 'w') as f:
        f.write(text)


def save_arrays(path, arrays):
    """``mx.nd.save``, then read back: MXNet does not check its last flush, so on a full disk it
    can leave a truncated file without an error (it raises only when a whole buffer fails)."""
    mx.nd.save(path, arrays)
    try:
        complete = len(mx.nd.load(path)) == len(arrays)
    except mx.base.MXNetError:
        complete = False
    if not complete:
        raise mx.base.MXNetError(f'FileStream.Write incomplete: {path} does not load back')


def load_params(path):
    """``(arg_params, aux_params)`` of a ``.params`` file with MXNet's ``arg:``/``aux:`` keys."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        arrays = mx.nd.load(path)
    except mx.base.MXNetError as error:  # truncated, or not an NDArray file at all
        raise ValueError(f"checkpoint {path} is damaged or not an MXNet .params file "
                         f"({str(error).strip().splitlines()[-1]})") from error
    if not isinstance(arrays, dict):
        raise ValueError(f"checkpoint {path} holds unnamed arrays, not the parameters of a network")
    arg = {k[4:]: v for k, v in arrays.items() if k.startswith('arg:')}
    aux = {k[4:]: v for k, v in arrays.items() if k.startswith('aux:')}
    if not arg and not aux:  # a Gluon-style file without prefixes
        arg = dict(arrays)
    return arg, aux


def load_trained(prefix, epoch=None):
    """``(arg_params, aux_params, info)`` of epoch ``epoch`` of ``prefix``: a number, ``'best'``
    or None (the latest). ``info`` is the epoch's JSON sidecar (network, data shape, class
    names... as ``train.py`` writes it), or {} when there is none."""
    if epoch is None:
        epoch = latest_epoch(prefix)
        if epoch is None:
            raise FileNotFoundError(f"no complete checkpoint {prefix}-NNNN.params (with its .json sidecar) found")
    path = f'{prefix}-best.params' if str(epoch) == 'best' else params_path(prefix, int(epoch))
    arg, aux = load_params(path)
    info = {}
    if str(epoch) != 'best':
        sidecar = f'{prefix}-{int(epoch):04d}.json'
        try:
            with open(sidecar) as f:
                info = json.load(f)
        except OSError:
            pass
        except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"checkpoint sidecar {sidecar} is damaged ({error}); restore it, or move it "
                             f"away and pass --network, --data-shape and --class-names") from error
        if not isinstance(info, dict):
            raise ValueError(f"checkpoint sidecar {sidecar} holds {type(info).__name__}, not a JSON object")
    return arg, aux, info


def save_best(prefix, epoch):
    """Copy epoch ``epoch``'s parameters to ``PREFIX-best.params`` (atomically)."""
    source = params_path(prefix, epoch)
    atomic_write(f'{prefix}-best.params', lambda path: save_arrays(path, mx.nd.load(source)))


def _epochs_on_disk(prefix, suffixes=('.params', '.json')):
    folder, base = os.path.split(os.path.abspath(prefix))
    epochs = set()
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        for suffix in suffixes:
            stem = name[len(base) + 1:-len(suffix)]
            if name.startswith(base + '-') and name.endswith(suffix) and stem.isdigit():
                epochs.add(int(stem))
    return sorted(epochs)


def missing_parts(prefix, epoch):
    """The files epoch ``epoch`` of ``prefix`` lacks to be complete ([] when it is complete): its
    sidecar, its ``.params`` and, when the sidecar says optimizer state was saved, its ``.states``."""
    sidecar = sidecar_path(prefix, epoch)
    try:
        with open(sidecar) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return [sidecar] + [p for p in (params_path(prefix, epoch),) if not os.path.isfile(p)]
    needed = [params_path(prefix, epoch)] + ([states_path(prefix, epoch)] if info.get(STATES_KEY) else [])
    return [path for path in needed if not os.path.isfile(path)]


def complete_epochs(prefix):
    """The complete epochs of ``prefix``, oldest first."""
    return [epoch for epoch in _epochs_on_disk(prefix) if not missing_parts(prefix, epoch)]


def latest_epoch(prefix):
    """The newest complete epoch of ``prefix``, or None. A prefix without any JSON sidecar (plain
    ``mx.model.save_checkpoint`` files) falls back to its highest ``.params`` epoch."""
    complete = complete_epochs(prefix)
    if complete:
        return complete[-1]
    if _epochs_on_disk(prefix, ('.json',)):
        return None
    return max(_epochs_on_disk(prefix, ('.params',)), default=None)


def saved_states(prefix, epoch):
    """The ``.states`` file committed with epoch ``epoch``, or None when it was saved without one."""
    path = states_path(prefix, epoch)
    return path if os.path.isfile(path) and not missing_parts(prefix, epoch) else None


def resume_epoch(prefix, wanted):
    """The epoch ``--resume`` continues from: ``wanted`` (a number) if it is complete, the newest
    complete epoch for ``'latest'``; a ValueError naming what is missing otherwise."""
    complete = complete_epochs(prefix)
    if wanted == 'latest':
        if not complete:
            raise ValueError(f"--resume: {prefix} has no complete epoch (PREFIX-NNNN.params with its .json sidecar)")
        return complete[-1]
    missing = missing_parts(prefix, int(wanted))
    if missing:
        newest = f'the newest complete epoch is {complete[-1]}' if complete else f'{prefix} has no complete epoch'
        raise ValueError(f"--resume {wanted}: epoch {wanted} of {prefix} is incomplete (missing or unreadable: "
                         f"{', '.join(missing)}; a save that did not finish, or not written by train.py); "
                         f"{newest}. --finetune {wanted} starts from the weights alone")
    return int(wanted)


def remove_stale_temporaries(prefix):
    """Delete the temporary files of ``prefix`` left by a killed run (their process is gone);
    returns their paths. The temporaries of a running process are kept."""
    folder, base = os.path.split(os.path.abspath(prefix))
    removed = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if not name.startswith(f'.{base}-'):
            continue
        owner = _TEMPORARY.search(name)
        if (owner and not _process_alive(int(owner.group(1)))) or (not owner and _LEGACY_TEMPORARY.search(name)):
            os.remove(os.path.join(folder, name))
            removed.append(os.path.join(folder, name))
    return removed


def _process_alive(pid):
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
