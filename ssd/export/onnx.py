"""Export an SSD inference Symbol -- backbone, heads, anchors, decoding and NMS -- to ONNX.

The graphs of ``symbols.get_symbol`` are made of standard MXNet operators only, so MXNet
1.9.1's own exporter (``mxnet.onnx``, "mx2onnx") converts almost all of them. What it lacks
or converts wrongly for these graphs is supplied by :mod:`ssd.export.converters`, installed
only for the duration of an export (mx2onnx's converter table is left as it was):

* missing: ``_full``, ``_greater_equal``, ``_greater_equal_scalar``, ``_np_cumsum``,
  ``_contrib_index_copy``;
* replaced: ``_contrib_box_nms`` (mx2onnx maps it to NonMaxSuppression, which ignores the
  classes and ``background_id``; ours keep the classes apart, see ``NMS_MODES``), ``Pooling`` (``NWC`` max pooling is rejected; ``full``
  max pooling relies on ONNX ceil mode, on which runtimes disagree), ``L2Normalization``
  (LpNormalization has no ``eps``), ``BatchNorm`` (mx2onnx exports the stored gamma even
  where ``fix_gamma`` makes MXNet scale by 1) and ``exp`` (box decoding; onnxruntime's float Exp
  differs from MXNet's glibc ``expf`` in the last bit for 6% of inputs, a double-precision
  Exp rounded to float32 for 0.06%);
* mx2onnx's record of output dtypes is corrected from MXNet's type inference (it takes the
  first input's, i.e. the condition's for ``where``).

With them, the anchors, decoding and NMS exported alone are bit-exact against MXNet on the
test inputs full of ties (``tests/test_onnx.py``); otherwise a box coordinate can differ in
its last bit where ``exp`` does. In a whole network the float32 backbone (convolutions,
softmax) differs by rounding (~1e-6), so near-equal scores may swap places.

The ONNX model has one input ``data`` (B, 3, H, W) float32 and, for a one-output Symbol, one
output ``detections`` (B, N, 6) rows ``[class_id, score, xmin, ymin, xmax, ymax]`` as MXNet
computes them (``tests/test_onnx.py`` compares the two). B is symbolic unless fixed at export.
"""
import contextlib
import io
import json

from ssd.checkpoint import atomic_write
from ssd.options import OPSETS

__all__ = ['export_onnx', 'to_onnx_model', 'OnnxExportError', 'OPSETS', 'NMS_MODES', 'INPUT_NAME',
           'OUTPUT_NAME']

#: ``box_nms`` conversions: ``standard`` is one ONNX NonMaxSuppression (accelerated by
#: runtimes; fast with ``nms_topk=-1``), ``exact`` an ONNX Loop over the sorted boxes that
#: reproduces MXNet's visit order bit for bit, ties included (slow without a top-k).
NMS_MODES = ('standard', 'exact')
INPUT_NAME = 'data'
OUTPUT_NAME = 'detections'


class OnnxExportError(RuntimeError):
    """An operator of the Symbol cannot be converted to ONNX; the message names it."""


def export_onnx(symbol, arg_params, aux_params, data_shape, batch_size, path, opset=13,
                nms='standard'):
    """Write ``symbol`` and its parameters as an ONNX model file; returns ``path``.

    Parameters
    ----------
    symbol : inference Symbol with the single input ``data`` and a single output, e.g.
        ``symbols.get_symbol(...)`` whose output is detections (B, N, 6).
    arg_params, aux_params : dicts of name -> NDArray (``ssd.checkpoint.load_params``).
    data_shape : int or (H, W), the input image size.
    batch_size : B of the model input ``data`` (B, 3, H, W) float32; None (the default of
        ``deploy.py``) leaves B symbolic (``batch``): any batch size at run time.
    path : output file, written atomically (a temporary file renamed into place).
    opset : ONNX opset version, one of ``OPSETS``.
    nms : ``'standard'`` (ONNX NonMaxSuppression) or ``'exact'`` (a Loop), see ``NMS_MODES``.

    The model's output is named ``detections``. Raises ``OnnxExportError`` naming the
    operator and node that cannot be converted, ``ValueError`` for a missing parameter, an
    unexpected input or an unsupported opset.
    """
    onnx = _onnx()
    height, width = (data_shape, data_shape) if isinstance(data_shape, int) else data_shape
    model = to_onnx_model(symbol, {**arg_params, **aux_params},
                          {INPUT_NAME: (batch_size or 1, 3, height, width)}, opset,
                          output_name=OUTPUT_NAME, dynamic_batch=batch_size is None, nms=nms)
    atomic_write(path, lambda temporary: onnx.save(model, temporary))
    return path


def to_onnx_model(symbol, params, input_shapes, opset=13, output_name=None, dynamic_batch=False,
                  nms='standard'):
    """Checked ``onnx.ModelProto`` of ``symbol`` (any graph of the supported operators).

    Parameters
    ----------
    symbol : Symbol; its inputs are ``input_shapes``' names (float32) plus ``params``.
    params : dict of name -> NDArray, every argument and auxiliary state not in
        ``input_shapes`` (extra entries are ignored).
    input_shapes : dict of input name -> shape (fixed in the model).
    opset : ONNX opset version, one of ``OPSETS``.
    output_name : new name of the single output (default: mx2onnx's, from the node name).
    dynamic_batch : if true, axis 0 of every input (and output) is the symbolic ``batch``;
        ``input_shapes``' batch sizes are then only used for MXNet's shape inference.
    nms : how ``box_nms`` is converted, one of ``NMS_MODES``.
    """
    onnx = _onnx()
    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if nms not in NMS_MODES:
        raise ValueError(f"nms must be one of {', '.join(NMS_MODES)}, got {nms!r}")
    params = _graph_params(symbol, params, input_shapes)
    # mx2onnx wants the shapes in the order of the symbol's inputs
    shapes = [tuple(input_shapes[n]) for n in symbol.list_inputs() if n not in params]
    # mx2onnx prints the name of every reversed scalar op (_rdiv_scalar...): silenced
    with _converters(symbol, input_shapes, opset, nms) as registry, \
            contextlib.redirect_stdout(io.StringIO()):
        _check_supported(symbol, registry, opset)
        graph = _mx2onnx_graph()().create_onnx_graph_proto(
            symbol, params, shapes, [onnx.TensorProto.FLOAT] * len(shapes),
            opset_version=opset, dynamic=dynamic_batch,
            dynamic_input_shapes=[('batch',) + s[1:] for s in shapes] if dynamic_batch else None)
    _tidy(graph)
    if dynamic_batch:
        _declare_output_shapes(graph, symbol, input_shapes)
    if output_name is not None:
        _rename_output(graph, output_name)
    opsets = [onnx.helper.make_opsetid('', opset)]
    model = onnx.helper.make_model(graph, opset_imports=opsets, producer_name='multibox-ssd',
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model)
    return model


def _onnx():
    """The onnx package (an optional dependency: ``pip install ... -e ".[onnx]"``)."""
    try:
        import onnx
    except ImportError as error:
        raise ImportError('ONNX export needs the onnx package: pip install -c constraints.txt '
                          '-e ".[onnx]"') from error
    return onnx


def _graph_params(symbol, params, input_shapes):
    """The parameters ``symbol`` needs, by name; raises ValueError if one is missing."""
    arguments = symbol.list_arguments()
    unknown = [n for n in input_shapes if n not in arguments]
    if unknown:
        raise ValueError(f"the symbol has no input named {', '.join(map(repr, unknown))}; "
                         f"its arguments start with {arguments[:3]}")
    needed = [n for n in arguments + symbol.list_auxiliary_states() if n not in input_shapes]
    missing = [n for n in needed if n not in params]
    if missing:
        raise ValueError(f"no value for {len(missing)} parameter(s) of the symbol: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return {n: params[n] for n in needed}


@contextlib.contextmanager
def _converters(symbol, input_shapes, opset, nms='standard'):
    """mx2onnx's converter table with ours added, for opset ``opset``; restored on exit.

    Yields ``{op: converter}`` as mx2onnx resolves it (the highest registered opset <=
    ``opset`` wins). Every converter is wrapped so that a failure names the op and node, and
    so that mx2onnx records the output dtypes MXNet infers (it otherwise takes the first
    input's, wrong for ``where``, whose condition comes first: later float64 constants of
    the ordering helpers would be built as float32).
    """
    from .converters import CONVERTERS, NMS_CONVERTERS, REPLACED
    MXNetGraph = _mx2onnx_graph()
    saved = MXNetGraph.registry_
    resolved = {}
    for version in sorted(v for v in saved if v <= opset):
        resolved.update(saved[version])
    resolved.update(CONVERTERS)
    resolved['_contrib_box_nms'] = NMS_CONVERTERS[nms]
    resolved.update({op: make(resolved[op]) for op, make in REPLACED.items()})
    dtypes = _node_dtypes(symbol, input_shapes)
    resolved = {op: _wrapped(op, convert, opset, dtypes) for op, convert in resolved.items()}
    MXNetGraph.registry_ = {opset: resolved}  # the table mx2onnx reads during conversion
    try:
        yield resolved
    finally:
        MXNetGraph.registry_ = saved


def _mx2onnx_graph():
    """mx2onnx's converter class ``MXNetGraph`` (MXNet 1.9.1, a private module).

    Its class attribute ``registry_`` ({opset: {op: converter}}) is the converter table, and
    ``create_onnx_graph_proto`` returns the graph without writing a file. The public
    ``mx.onnx.export_model`` does neither: it writes a file with the registered converters.
    """
    from mxnet.onnx.mx2onnx._export_onnx import MXNetGraph
    return MXNetGraph


def _node_dtypes(symbol, input_shapes):
    """Output dtypes MXNet infers for each node of ``symbol``, by node index in its JSON."""
    internals = symbol.get_internals()
    _, types, _ = internals.infer_type(**{name: 'float32' for name in input_shapes})
    by_output = dict(zip(internals.list_outputs(), types))
    dtypes = []
    for node in json.loads(symbol.tojson())['nodes']:
        name = node['name']
        single = by_output.get(f'{name}_output')
        multiple = [by_output[f'{name}_output{k}'] for k in range(1000)
                    if f'{name}_output{k}' in by_output] if single is None else [single]
        dtypes.append(multiple or None)
    return dtypes


def _wrapped(op, convert, opset, dtypes):
    def convert_with_context(node, **kwargs):
        try:
            result = convert(node, **kwargs)
        except Exception as error:
            raise OnnxExportError(f"cannot convert MXNet operator {op!r} (node "
                                  f"{node['name']!r}, attributes {node.get('attrs', {})}) to "
                                  f"ONNX opset {opset}: {error}") from error
        known = dtypes[kwargs['idx']] if op != 'null' else None
        nodes = result[0] if isinstance(result, tuple) else result
        count = _output_count(node['name'], nodes)
        if known is None or count > len(known):
            return result
        return nodes, known[:count]
    return convert_with_context


def _output_count(name, nodes):
    """How many outputs of the MXNet node the ONNX ``nodes`` produce, as mx2onnx counts them
    (outputs named ``name`` or ``name<k>``; at least one)."""
    produced = {out for node in nodes if hasattr(node, 'output') for out in node.output
                if out == name or (out.startswith(name) and out[len(name):].isdigit())}
    return max(len(produced), 1)


def _check_supported(symbol, registry, opset):
    """Raise OnnxExportError listing every operator of ``symbol`` without a converter."""
    nodes = json.loads(symbol.tojson())['nodes']
    missing = {}
    for node in nodes:
        if node['op'] != 'null' and node['op'] not in registry:
            missing.setdefault(node['op'], node['name'])
    if missing:
        listed = ', '.join(f"{op!r} (e.g. node {name!r})" for op, name in sorted(missing.items()))
        raise OnnxExportError(f"no ONNX opset {opset} converter for MXNet operator(s) {listed}")


def _rename_output(graph, name):
    """Give the single graph output the stable name ``name`` (an Identity node)."""
    import onnx
    if len(graph.output) != 1:
        raise ValueError(f"expected a symbol with one output, got {len(graph.output)}")
    output = graph.output[0]
    graph.node.append(onnx.helper.make_node('Identity', [output.name], [name]))
    renamed = onnx.ValueInfoProto()
    renamed.CopyFrom(output)
    renamed.name = name
    graph.output.remove(output)
    graph.output.append(renamed)


def _declare_output_shapes(graph, symbol, input_shapes):
    """Output shapes as MXNet infers them, axis 0 the symbolic ``batch`` (mx2onnx's dynamic
    mode leaves every output dimension unknown)."""
    _, shapes, _ = symbol.infer_shape(**input_shapes)
    for output, shape in zip(graph.output, shapes):
        dims = output.type.tensor_type.shape.dim
        dims[0].dim_param = 'batch'
        for dim, size in zip(dims[1:], shape[1:]):
            dim.dim_value = size


def _tidy(graph):
    """Drop what mx2onnx leaves over: initializers and graph inputs no node reads (e.g. the
    gammas of ``fix_gamma`` BatchNorms), and graph inputs that are initializers (runtimes
    then cannot treat those weights as constants)."""
    used = _read_names(graph)
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    constants = {tensor.name for tensor in graph.initializer}
    for value in [v for v in graph.input if v.name in constants or v.name not in used]:
        graph.input.remove(value)


def _read_names(graph):
    """Every value name read by a node of ``graph`` or of its subgraphs (Loop bodies)."""
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.g.node:
                names.update(_read_names(attribute.g))
    return names
