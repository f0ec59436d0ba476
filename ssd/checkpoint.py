"""MXNet checkpoints written atomically: ``PREFIX-symbol.json``, ``PREFIX-%04d.params``, ``PREFIX-%04d.states``.

The names are MXNet's own (``mx.model.save_checkpoint``), so every script and plain MXNet load
them. Each file is written to a temporary name beside the target and renamed into place:
a run killed mid-write leaves the previous checkpoint intact and no half-written file.
"""
import json
import os
import tempfile

import mxnet as mx

__all__ = ['atomic_write', 'save', 'load_params', 'load_trained', 'save_best', 'params_path',
           'states_path', 'latest_epoch']


def atomic_write(path, write):
    """Call ``write(temporary_path)`` then rename the result to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', dir=folder)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, _new_file_mode())  # mkstemp's files are private (0600); others are not
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _new_file_mode():
    """The mode ``open(path, 'w')`` would give a new file: 0666 minus the process umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def params_path(prefix, epoch):
    return f'{prefix}-{epoch:04d}.params'


def states_path(prefix, epoch):
    return f'{prefix}-{epoch:04d}.states'


def save(prefix, epoch, symbol, arg_params, aux_params, save_states=None, extra=None):
    """Write the symbol, the parameters and (if given) optimizer states and a JSON sidecar."""
    atomic_write(f'{prefix}-symbol.json', symbol.save)
    arrays = {f'arg:{k}': v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    arrays.update({f'aux:{k}': v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    atomic_write(params_path(prefix, epoch), lambda path: mx.nd.save(path, arrays))
    if save_states is not None:
        atomic_write(states_path(prefix, epoch), save_states)
    if extra is not None:
        atomic_write(f'{prefix}-{epoch:04d}.json', lambda path: _dump_json(path, extra))


def _dump_json(path, value):
    with open(path, 'w') as f:
        json.dump(value, f, indent=1)


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
            raise FileNotFoundError(f"no checkpoint {prefix}-NNNN.params found")
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
            raise ValueError(f"checkpoint sidecar {sidecar} is damaged ({error}); restore it, or move it away and pass "
                             f"--network, --data-shape and --class-names") from error
        if not isinstance(info, dict):
            raise ValueError(f"checkpoint sidecar {sidecar} holds {type(info).__name__}, not a JSON object")
    return arg, aux, info


def save_best(prefix, epoch):
    """Copy epoch ``epoch``'s parameters to ``PREFIX-best.params`` (atomically)."""
    source = params_path(prefix, epoch)
    atomic_write(f'{prefix}-best.params', lambda path: mx.nd.save(path, mx.nd.load(source)))


def latest_epoch(prefix):
    """The highest epoch with a ``.params`` file for ``prefix``, or None."""
    folder, base = os.path.split(os.path.abspath(prefix))
    epochs = []
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        stem = name[len(base) + 1:-len('.params')]
        if name.startswith(base + '-') and name.endswith('.params') and stem.isdigit():
            epochs.append(int(stem))
    return max(epochs, default=None)
