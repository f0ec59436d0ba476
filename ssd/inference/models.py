"""Find a trained detector for demo.py and deploy.py: a checkpoint, a deploy graph, GluonCV's VGG16 SSDs.

Each loader returns a ``Model``: the inference Symbol (ending in ``MultiBoxDetection``, output
(B, N, 6) rows ``[class_id, score, xmin, ymin, xmax, ymax]``, corners normalised to [0, 1]),
its parameters, the square input size and the class names. Every problem a user can fix
(missing file, unknown network, class count that does not fit the weights, GluonCV weights
neither cached nor downloadable) raises ``ValueError`` or ``FileNotFoundError`` with a message
saying what to do.

A deploy graph is a checkpoint with prefix ``PREFIX-deploy`` and epoch 0:
``PREFIX-deploy-symbol.json``, ``PREFIX-deploy-0000.params`` and ``PREFIX-deploy-0000.json``
(network, data shape, class names and the NMS settings baked into the graph).
"""
import hashlib
import logging
import os
import re
from collections import namedtuple

import mxnet as mx

import symbols
import symbols.ssd
from ssd import checkpoint

__all__ = ['Model', 'NMS_DEFAULTS', 'from_checkpoint', 'from_deploy', 'from_gluoncv',
           'gluoncv_weights_file', 'deploy_prefix', 'describe']

Model = namedtuple('Model', 'symbol arg_params aux_params data_shape class_names info')
NMS_DEFAULTS = {'nms_thresh': symbols.ssd.NMS_THRESH, 'force_suppress': False, 'nms_topk': symbols.ssd.NMS_TOPK}
log = logging.getLogger(__name__)
GLUONCV_NAME = re.compile(r'^ssd_(300|512)_vgg16_atrous_(voc|coco)$')


def deploy_prefix(prefix):
    return f'{prefix}-deploy'


def from_checkpoint(prefix, epoch, network=None, data_shape=None, class_names=None, nms=None):
    """The inference graph of ``network`` with the weights of epoch ``epoch`` of ``prefix``.

    ``network``, ``data_shape`` and ``class_names`` default to the checkpoint's JSON sidecar;
    ``nms`` holds ``get_symbol``'s ``nms_thresh``/``force_suppress``/``nms_topk``.
    """
    try:
        arg, aux, info = checkpoint.load_trained(prefix, epoch)
    except FileNotFoundError as error:
        latest = checkpoint.latest_epoch(prefix)
        raise FileNotFoundError(f"{error}" + (f" (the latest epoch of {prefix} is {latest})" if latest else
                                              f" (no {prefix}-NNNN.params at all)")) from error
    network = network or info.get('network')
    data_shape = data_shape or info.get('data_shape')
    class_names = class_names or info.get('class_names')
    missing = [flag for flag, value in (('--network', network), ('--data-shape', data_shape),
                                        ('--class-names', class_names)) if not value]
    if missing:
        raise ValueError(f"{', '.join(missing)} needed: checkpoint {prefix} epoch {epoch} has no JSON "
                         f"sidecar recording them")
    if network not in symbols.network_names():
        raise ValueError(f"unknown network {network!r}; choose from {', '.join(symbols.network_names())}")
    data_shape, class_names = _sidecar_values(checkpoint.sidecar_path(prefix, int(epoch)) if str(epoch) != 'best'
                                              else f'{prefix}-best.params', data_shape, class_names)
    nms = {**NMS_DEFAULTS, **(nms or {})}
    symbol = symbols.get_symbol(network, len(class_names), data_shape, **nms)
    described = {'network': network, 'data_shape': data_shape, 'class_names': class_names,
                 'nms_threshold': nms['nms_thresh'], 'force_suppress': nms['force_suppress'],
                 'nms_topk': nms['nms_topk'], 'source': f'{prefix} epoch {epoch}'}
    return _checked(Model(symbol, arg, aux, data_shape, class_names, described))


def from_deploy(prefix, data_shape=None, class_names=None):
    """The graph ``deploy.py`` wrote for ``prefix`` (``PREFIX-deploy-symbol.json``...); NMS is baked in."""
    target = deploy_prefix(prefix)
    graph = f'{target}-symbol.json'
    if not os.path.isfile(graph):
        raise FileNotFoundError(f"deploy graph {graph} does not exist; write it with "
                                f"`python deploy.py --prefix {prefix} --epoch N`")
    arg, aux, info = checkpoint.load_trained(target, 0)
    data_shape = data_shape or info.get('data_shape')
    class_names = class_names or info.get('class_names')
    if not data_shape or not class_names:
        raise ValueError(f"--data-shape and --class-names needed: {target}-0000.json does not record them")
    info = {**info, 'source': f"{graph} (from {info.get('source', '?')})"}
    try:
        symbol = mx.sym.load(graph)
    except (mx.base.MXNetError, ValueError) as error:  # truncated, not a graph; or MXNet's own error
        # text, quoting the broken bytes, fails to decode (UnicodeDecodeError)
        raise ValueError(f"deploy graph {graph} is damaged or not an MXNet symbol file "
                         f"({str(error).strip().splitlines()[-1]}); write it again with deploy.py") from error
    data_shape, class_names = _sidecar_values(f'{target}-0000.json', data_shape, class_names)
    model = Model(symbol, arg, aux, data_shape, class_names, info)
    return _checked(model)


def from_gluoncv(name, nms=None):
    """GluonCV's ``name`` (``ssd_300_vgg16_atrous_voc``, ``ssd_512_...``) converted to our vgg16_reduced graph.

    The weights come from GluonCV's model store (downloaded when online, see
    ``gluoncv_weights_file``); the anchors are read from the GluonCV network, so the graph is
    GluonCV's layer for layer (``symbols.convert``).
    """
    from symbols import convert
    match = GLUONCV_NAME.match(name)
    if not match:
        raise ValueError(f"--pretrained gluoncv:{name}: only GluonCV's VGG16 SSDs convert to our graph: "
                         f"ssd_300_vgg16_atrous_voc, ssd_512_vgg16_atrous_voc (or _coco)")
    path, data_shape = gluoncv_weights_file(name), int(match.group(1))
    try:
        net = convert.load_gluoncv_ssd(path, name)
    except Exception as error:  # a truncated or foreign file: MXNet raises several kinds
        raise ValueError(f"cannot load GluonCV weights {path} ({error}); delete the file so that "
                         f"GluonCV downloads it again") from error
    arg, aux = convert.gluoncv_ssd_params(net, data_shape)
    nms = {**NMS_DEFAULTS, **(nms or {})}
    symbol = symbols.get_symbol('vgg16_reduced', len(net.classes), data_shape, **nms,
                                **convert.gluoncv_overrides(net, data_shape))
    info = {'network': 'vgg16_reduced', 'data_shape': data_shape, 'class_names': list(net.classes),
            'source': f'gluoncv:{name} ({path})'}
    return _checked(Model(symbol, arg, aux, data_shape, list(net.classes), info))


def gluoncv_weights_file(name):
    """Path of GluonCV's ``name`` weights: the file already in the model store, or a download.

    The store is GluonCV's: ``$MXNET_HOME/models``, else ``~/.mxnet/models``. A file found there
    is used even when its checksum differs from GluonCV's published one (a warning says so);
    GluonCV itself would download it again.
    """
    from gluoncv.model_zoo import model_store
    root = os.path.join(os.environ['MXNET_HOME'], 'models') if 'MXNET_HOME' in os.environ \
        else os.path.expanduser(os.path.join('~', '.mxnet', 'models'))
    file_name = f'{name}-{model_store.short_hash(name)}.params'
    local = os.path.join(root, file_name)
    if os.path.isfile(local):
        if _sha1(local) != _published_sha1(name):
            log.warning("%s differs from GluonCV's published %s weights (checksum); using it anyway", local, name)
        return local
    try:
        return model_store.get_model_file(name, root=root)
    except Exception as error:  # requests' connection errors, HTTP failures, bad archives
        raise FileNotFoundError(
            f"GluonCV weights {name!r} are not in the model store {root} and could not be downloaded "
            f"({type(error).__name__}: {error}). Run once with internet access, or copy {file_name} "
            f"(from a machine where GluonCV downloaded it) into {root}; set MXNET_HOME to use "
            f"another store (weights go to $MXNET_HOME/models).") from error


def _published_sha1(name):
    """The SHA-1 GluonCV publishes for its ``name`` weights; the model store's public
    ``short_hash`` gives only its first 8 digits, so this reads GluonCV 0.10.5's table."""
    from gluoncv.model_zoo import model_store
    return model_store._model_sha1[name]


def _sha1(path):
    digest = hashlib.sha1()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _sidecar_values(sidecar, data_shape, class_names):
    """``(int data_shape, list of class names)``; a ValueError naming ``sidecar`` if its values
    (or the options') are not a positive size and a list of distinct names."""
    if isinstance(data_shape, bool) or not isinstance(data_shape, (int, str)) or not str(data_shape).isdigit() \
            or int(data_shape) < 1:
        raise ValueError(f"{sidecar}: data_shape {data_shape!r} is not a positive size; restore the file or "
                         f"pass --data-shape")
    if isinstance(class_names, str) or not all(isinstance(name, str) and name for name in class_names) \
            or len(set(class_names)) != len(class_names):
        raise ValueError(f"{sidecar}: class_names {class_names!r} is not a list of distinct names; restore the "
                         f"file or pass --class-names")
    return int(data_shape), list(class_names)


def _checked(model):
    """``model`` if its parameters are exactly those its graph needs, with their shapes, and all
    finite (a diverged checkpoint would detect nothing, silently)."""
    symbol = model.symbol
    names = [n for n in symbol.list_arguments() if n != 'data']
    missing = [n for n in names if n not in model.arg_params]
    missing += [n for n in symbol.list_auxiliary_states() if n not in model.aux_params]
    source = model.info.get('source', 'the weights')
    if missing:
        raise ValueError(f"{source} lacks {len(missing)} parameters of this graph ({', '.join(missing[:4])}"
                         f"{', ...' if len(missing) > 4 else ''}): wrong --network, or weights of another "
                         f"model (or of an older version of this network)")
    try:
        arg_shapes, _, aux_shapes = symbol.infer_shape(data=(1, 3, model.data_shape, model.data_shape))
    except Exception as error:  # MXNetError: a feature map shrinks to nothing
        raise ValueError(f"the graph cannot run at data shape {model.data_shape}: {error}") from error
    expected = dict(zip(symbol.list_arguments(), arg_shapes))
    expected.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    params = {**model.arg_params, **model.aux_params}
    wrong = [f"{n} {tuple(params[n].shape)} != {tuple(expected[n])}" for n in expected
             if n != 'data' and tuple(params[n].shape) != tuple(expected[n])]
    if wrong:
        raise ValueError(f"{source} does not fit this graph with {len(model.class_names)} classes "
                         f"({'; '.join(wrong[:3])}): check --class-names and --network")
    model = model._replace(arg_params={n: model.arg_params[n] for n in names},
                           aux_params={n: model.aux_params[n] for n in symbol.list_auxiliary_states()})
    bad = checkpoint.non_finite_names(model.arg_params, model.aux_params)
    if bad:
        raise ValueError(f"{source} holds NaN or infinity ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}): "
                         f"the weights of a run that diverged; use an earlier epoch")
    return model


def describe(model):
    """One line: where the weights come from, network, input size, classes."""
    info = model.info
    return (f"{info.get('source', '?')}: {info.get('network', 'graph')} at {model.data_shape}x{model.data_shape}, "
            f"{len(model.class_names)} classes ({', '.join(model.class_names[:6])}"
            f"{', ...' if len(model.class_names) > 6 else ''})")
