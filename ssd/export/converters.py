"""ONNX converters for the MXNet operators of an SSD inference graph that MXNet 1.9.1's
exporter (mx2onnx) lacks or converts wrongly.

Each converter has mx2onnx's signature ``convert(node, **kwargs)``: ``node`` is the MXNet JSON
node, ``kwargs`` carries ``outputs_lookup`` (names and dtypes of converted outputs),
``initializer`` (list of constant tensors) and ``opset_version``. It returns ONNX nodes, the
last output being named after the MXNet node, plus the output dtypes when they cannot be taken
from the first input. :mod:`ssd.export.onnx` installs them for the duration of an export.

Every converter reproduces the MXNet 1.9.1 CPU operator, operation order and comparisons
included (NaN inputs aside where noted), so exported decoding and NMS make the same decisions.
Written for ONNX opsets 13 to 17.
"""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from multibox.params import as_bool, as_int, dmlc_float

__all__ = ['CONVERTERS', 'REPLACED', 'NMS_CONVERTERS']


class _Nodes:
    """ONNX nodes and constants emitted for one MXNet node; names derive from ``prefix``.

    Generated names are ``{prefix}__{k}``: mx2onnx takes ``{prefix}`` and ``{prefix}{digits}``
    for the MXNet node's own outputs, so these never collide with them.
    """

    def __init__(self, prefix, initializer):
        self.prefix = prefix
        self.initializer = initializer
        self.nodes = []
        self._count = 0

    def fresh(self):
        self._count += 1
        return f'{self.prefix}__{self._count}'

    def const(self, value, dtype):
        """An initializer holding ``value`` (scalar or array) as ``dtype``."""
        name = self.fresh()
        self.initializer.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def add(self, op_type, *inputs, out=None, outputs=1, **attrs):
        """Append ``op_type(*inputs)``; returns its output name (or list of ``outputs`` names)."""
        names = [out or self.fresh()] if outputs == 1 else [self.fresh() for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


def _inputs(node, kwargs):
    """(input names, input numpy dtypes, attributes) of an MXNet JSON node."""
    lookup = kwargs['outputs_lookup']
    outputs = [lookup[index][slot] for index, slot, *_ in node['inputs']]
    return [o.name for o in outputs], [np.dtype(o.dtype) for o in outputs], node.get('attrs', {})


def _tensor_type(dtype):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _scalar_for(value, dtype):
    """MXNet casts a scalar parameter to the data type before comparing (``DType(scalar)``)."""
    return int(value) if np.issubdtype(dtype, np.integer) else float(value)


def convert_full(node, **kwargs):
    """``_full``: constant ``value`` of ``shape`` and ``dtype`` (MXNet fills ``DType(value)``)."""
    _, _, attrs = _inputs(node, kwargs)
    dtype = np.dtype(attrs.get('dtype', 'float32'))
    shape = [int(d) for d in attrs['shape'].strip('()[] ').split(',') if d.strip()]
    value = np.full(shape, float(attrs.get('value', '0')), dtype=dtype)
    const = helper.make_node('Constant', [], [node['name']],
                             value=numpy_helper.from_array(value, node['name'] + '__value'))
    return [const], [dtype]


def _comparison(op_type, with_scalar):
    """MXNet comparisons return 0/1 in the input's dtype; ONNX ones return bool."""
    def convert(node, **kwargs):
        names, dtypes, attrs = _inputs(node, kwargs)
        g = _Nodes(node['name'], kwargs['initializer'])
        rhs = g.const(_scalar_for(attrs.get('scalar', 0), dtypes[0]), dtypes[0]) if with_scalar \
            else names[1]
        g.add('Cast', g.add(op_type, names[0], rhs), out=node['name'],
              to=_tensor_type(dtypes[0]))
        return g.nodes
    return convert


def convert_cumsum(node, **kwargs):
    """``_np_cumsum`` (``F.cumsum``): ONNX CumSum, sequential like MXNet's CPU loop."""
    names, dtypes, attrs = _inputs(node, kwargs)
    g = _Nodes(node['name'], kwargs['initializer'])
    data, axis = names[0], attrs.get('axis', 'None')
    if axis == 'None':  # numpy semantics: over the flattened array
        data, axis = g.add('Reshape', data, g.const([-1], np.int64)), 0
    dtype = dtypes[0] if attrs.get('dtype', 'None') == 'None' else np.dtype(attrs['dtype'])
    if not np.issubdtype(dtype, np.floating):  # numpy's integer promotion rules: not needed
        raise NotImplementedError(f"cumsum accumulating in {dtype}")
    if dtype != dtypes[0]:
        data = g.add('Cast', data, to=_tensor_type(dtype))
    g.add('CumSum', data, g.const(int(axis), np.int64), out=node['name'])
    return g.nodes, [dtype]


def convert_exp(node, **kwargs):
    """``exp`` of float32 evaluated in double precision and rounded to float32.

    MXNet calls glibc's ``expf`` (error < 0.502 ulp, nearly always the correctly rounded
    value); onnxruntime's float Exp is a faster approximation that differed from it in 6% of
    8M random inputs, the double path in 0.06%. Box decoding is the only user in our graphs.
    """
    names, dtypes, _ = _inputs(node, kwargs)
    g = _Nodes(node['name'], kwargs['initializer'])
    if dtypes[0] != np.float32:
        g.add('Exp', names[0], out=node['name'])
        return g.nodes
    wide = g.add('Exp', g.add('Cast', names[0], to=TensorProto.DOUBLE))
    g.add('Cast', wide, out=node['name'], to=TensorProto.FLOAT)
    return g.nodes


def convert_l2_normalization(node, **kwargs):
    """``L2Normalization``: ``x / sqrt(sum(x * x) + eps)``, MXNet's formula.

    mx2onnx emits LpNormalization, which has no ``eps`` (a slightly different value, and 0/0
    where every channel of a position is 0; MXNet gives 0 there).
    """
    names, dtypes, attrs = _inputs(node, kwargs)
    g = _Nodes(node['name'], kwargs['initializer'])
    mode = attrs.get('mode', 'instance')
    if mode == 'channel':
        axes = g.const([1], np.int64)
    else:  # instance: every axis but the batch; spatial: every axis after the channels
        rank = g.add('Size', g.add('Shape', names[0]))
        axes = g.add('Range', g.const(1 if mode == 'instance' else 2, np.int64), rank,
                     g.const(1, np.int64))
    total = g.add('ReduceSum', g.add('Mul', names[0], names[0]), axes, keepdims=1)
    eps = g.const(dmlc_float(attrs.get('eps', '1e-10'), 'eps'), dtypes[0])
    g.add('Div', names[0], g.add('Sqrt', g.add('Add', total, eps)), out=node['name'])
    return g.nodes


def convert_index_copy(node, **kwargs):
    """``_contrib_index_copy(old, index, new)``: ``old`` with rows ``index[i]`` set to ``new[i]``.

    ScatterND with ``index`` as (M, 1) row coordinates; as in MXNet, repeated indices leave
    an unspecified winner (our graphs scatter to distinct rows).
    """
    names, _, _ = _inputs(node, kwargs)
    g = _Nodes(node['name'], kwargs['initializer'])
    rows = g.add('Reshape', g.add('Cast', names[1], to=TensorProto.INT64),
                 g.const([-1, 1], np.int64))
    g.add('ScatterND', names[0], rows, names[2], out=node['name'])
    return g.nodes


def batchnorm_converter(original):
    """``BatchNorm`` converter: mx2onnx's, with gamma replaced by ones where ``fix_gamma``.

    MXNet ignores the stored gamma when ``fix_gamma`` is true (its default; our MobileNet
    extra layers use it) and scales by 1, but mx2onnx exports the stored array, which weight
    decay shrinks towards 0 during training (its gradient is 0). The ones are
    ``ConstantOfShape(Shape(beta))``, folded by runtimes; the unused gamma is dropped from
    the model. eps is read by mx2onnx (default 1e-3, as MXNet); momentum and
    use_global_stats do not change inference (the moving statistics are used).
    """
    def convert(node, **kwargs):
        names, dtypes, attrs = _inputs(node, kwargs)
        if not as_bool(attrs.get('fix_gamma', 'True'), 'fix_gamma'):
            return original(node, **kwargs)
        if as_int(attrs.get('axis', '1'), 'axis') != 1:
            raise NotImplementedError(f"BatchNorm axis must be 1, got {attrs['axis']}")
        g = _Nodes(node['name'], kwargs['initializer'])
        one = numpy_helper.from_array(np.ones(1, dtypes[2]), g.fresh())
        ones = g.add('ConstantOfShape', g.add('Shape', names[2]), value=one)
        g.add('BatchNormalization', names[0], ones, *names[2:], out=node['name'],
              epsilon=dmlc_float(attrs.get('eps', '1e-3'), 'eps'))
        return g.nodes
    return convert


_CHANNEL_LAST = {'NWC': 3, 'NHWC': 4, 'NDHWC': 5}  # layout: rank
_CHANNEL_FIRST = ('None', 'NCW', 'NCHW', 'NCDHW')


def pooling_converter(original):
    """``Pooling`` converter: MXNet max pooling done by :func:`_max_pool`, any layout.

    multibox.classes reduces over classes with a 1-D ``NWC`` max pooling, which mx2onnx
    rejects; it becomes Transpose -> MaxPool -> Transpose. Channel-first max pooling (VGG's
    ``full``-convention pools) also avoids ONNX ceil mode. Other pooling types go to
    mx2onnx's ``original``.
    """
    def convert(node, **kwargs):
        names, dtypes, attrs = _inputs(node, kwargs)
        layout = attrs.get('layout', 'None')
        plain_max = (attrs.get('pool_type', 'max') == 'max'
                     and not as_bool(attrs.get('global_pool', 'False'), 'global_pool'))
        if layout in _CHANNEL_FIRST and plain_max:
            return _max_pool(_Nodes(node['name'], kwargs['initializer']), names[0], attrs,
                             dtypes[0], out=node['name'])
        if layout not in _CHANNEL_LAST:
            return original(node, **kwargs)
        if not plain_max:
            raise NotImplementedError(f"layout {layout} is supported for non-global max pooling "
                                      f"only, got {attrs}")
        g = _Nodes(node['name'], kwargs['initializer'])
        ndim = _CHANNEL_LAST[layout]
        first = g.add('Transpose', names[0], perm=[0, ndim - 1] + list(range(1, ndim - 1)))
        pooled = _max_pool(g, first, attrs, dtypes[0])
        g.add('Transpose', pooled, out=node['name'], perm=[0] + list(range(2, ndim)) + [1])
        return g.nodes
    return convert


def _max_pool(g, data, attrs, dtype, out=None):
    """MXNet max pooling of channel-first ``data`` (B, C, L1, ...), both conventions.

    MXNet has ``1 + floor((L + 2p - k) / s)`` windows (``valid``) or ``1 + ceil(...)``
    (``full``), each the max of its in-range elements starting from -FLT_MAX. ONNX ceil mode
    is not used: runtimes disagree when the last window starts in the padding (onnx shape
    inference drops it, onnxruntime keeps it). Floor mode with ``min(p + s - 1, k - 1)`` end
    padding (onnxruntime wants pads < kernel) gives every window that holds an element; the
    ``full`` windows beyond them hold only padding, so they are appended as -FLT_MAX (the
    value MXNet gives them). NaN inputs may be handled differently. Returns the output
    name, or with ``out`` the list of nodes (the last one writing ``out``).
    """
    kernel = _int_tuple(attrs['kernel'])
    stride = _int_tuple(attrs.get('stride', '()')) or (1,) * len(kernel)
    pad = _int_tuple(attrs.get('pad', '()')) or (0,) * len(kernel)
    convention = attrs.get('pooling_convention', 'valid')
    if convention not in ('valid', 'full'):
        raise NotImplementedError(f"pooling_convention {convention!r}")
    full = convention == 'full'
    end = [min(p + s - 1, k - 1) if full else p for p, s, k in zip(pad, stride, kernel)]
    complete = not full or all(e == p + s - 1 for e, p, s in zip(end, pad, stride))
    pooled = g.add('MaxPool', data, out=out if complete else None, kernel_shape=kernel,
                   strides=stride, pads=list(pad) + end)
    if complete:
        return g.nodes if out else pooled
    # windows past the data: (L + 2p - k + s - 1) // s - (L + p - 1) // s per spatial axis
    extent = g.add('Slice', g.add('Shape', data), g.const([2], np.int64),
                   g.const([2 + len(kernel)], np.int64))
    steps = g.const(stride, np.int64)
    mxnet_last = g.add('Div', g.add('Add', extent, g.const([2 * p - k + s - 1 for p, k, s in
                                                             zip(pad, kernel, stride)], np.int64)),
                       steps)
    onnx_last = g.add('Div', g.add('Add', extent, g.const([p - 1 for p in pad], np.int64)), steps)
    extra = g.add('Sub', mxnet_last, onnx_last)
    pads = g.add('Concat', g.const([0] * (len(kernel) + 4), np.int64), extra, axis=0)
    padded = g.add('Pad', pooled, pads, g.const(np.finfo(dtype).min, dtype), out=out,
                   mode='constant')
    return g.nodes if out else padded


def _int_tuple(text):
    return tuple(int(v) for v in text.strip('()[] ').split(',') if v.strip() not in ('', 'None'))


def convert_box_nms(node, **kwargs):
    """``_contrib_box_nms`` with MXNet 1.9.1's exact semantics (``bounding_box-inl.h``).

    mx2onnx maps box_nms to ONNX NonMaxSuppression, which ignores ``id_index`` (suppresses
    across classes), ``background_id`` and box ties; this is the native algorithm instead:

    1. rows with ``score > valid_thresh`` (and ``id != background_id`` if ``id_index >= 0``)
       are valid; they are sorted by descending score, ties in row order (TopK's rule, and
       the native stable sort);
    2. the first ``topk`` valid rows take part; an ONNX Loop visits them in order and a row
       still alive suppresses every later alive row of the same class (``int`` cast of the
       id; any class with ``force_suppress``) whose IoU, computed in the native float order,
       is ``> overlap_thresh``;
    3. the survivors are written first, in order, every other row is -1.

    Data (..., N, W) -> same shape. ``in_format`` must equal ``out_format``.
    """
    names, dtypes, attrs = _inputs(node, kwargs)
    params = _nms_params(attrs)
    g = _Nodes(node['name'], kwargs['initializer'])
    result = node['name'] + '0'  # box_nms has two outputs (one hidden): mx2onnx's name of #0
    if params['topk'] == 0:  # native: the input is copied
        g.add('Identity', names[0], out=result)
        return g.nodes
    rows, order, shape = _sorted_rows(g, names[0], dtypes[0], params)
    alive = _greedy_nms(g, rows, order, shape, dtypes[0], params)
    out = _survivors_first(g, rows, alive, shape, dtypes[0])
    g.add('Reshape', out, shape['data'], out=result)
    return g.nodes


def convert_box_nms_standard(node, **kwargs):
    """``_contrib_box_nms`` through ONNX ``NonMaxSuppression``, which runtimes accelerate.

    Steps 1 and 3 of :func:`convert_box_nms` are kept (TopK sort, survivors first in score
    order, ties in row order); step 2 is one NonMaxSuppression over the sorted rows: its
    class axis holds each row's class (``OneHot`` of the ``int`` id, ``C`` = largest id + 1;
    one class with ``force_suppress`` or without ``id_index``), so boxes of other classes
    never meet and IoUs are computed on the original coordinates, and rows that do not take
    part (invalid, or past ``topk``) score -inf, below the -FLT_MAX score threshold. The
    selection equals the exact one except where the runtime's NMS visits tied scores in
    another order or computes a degenerate box (negative width) differently: ONNX
    NonMaxSuppression orders a box's corners, MXNet gives it area 0.
    """
    names, dtypes, attrs = _inputs(node, kwargs)
    params = _nms_params(attrs)
    g = _Nodes(node['name'], kwargs['initializer'])
    result = node['name'] + '0'
    if params['topk'] == 0:
        g.add('Identity', names[0], out=result)
        return g.nodes
    rows, valid, shape = _sorted_rows(g, names[0], dtypes[0], params)
    n = g.add('Reshape', shape['n'], g.const([], np.int64))
    position = g.add('Range', g.const(0, np.int64), n, g.const(1, np.int64))
    alive = valid if params['topk'] < 0 else g.add(
        'And', valid, g.add('Less', position, g.const(params['topk'], np.int64)))
    score = g.add('Where', alive, _column(g, rows, params['score_index']),
                  g.const(-np.inf, dtypes[0]))
    scores = _class_scores(g, rows, score, dtypes[0], params)  # (B, C, N)
    start = params['coord_start']
    boxes = g.add('Slice', rows, g.const([start], np.int64), g.const([start + 4], np.int64),
                  g.const([2], np.int64))
    if dtypes[0] != np.float32:  # NonMaxSuppression takes float boxes and scores
        boxes = g.add('Cast', boxes, to=TensorProto.FLOAT)
        scores = g.add('Cast', scores, to=TensorProto.FLOAT)
    selected = g.add('NonMaxSuppression', boxes, scores, g.const([np.iinfo(np.int64).max], np.int64),
                     g.const([params['overlap']], np.float32),
                     g.const([-np.finfo(np.float32).max], np.float32),
                     center_point_box=int(params['center']))
    where = g.add('Gather', selected, g.const([0, 2], np.int64), axis=1)  # (K, 2) [image, row]
    count = g.add('Slice', g.add('Shape', selected), g.const([0], np.int64), g.const([1], np.int64))
    zeros = g.add('ConstantOfShape', g.add('Shape', alive),
                  value=numpy_helper.from_array(np.zeros(1, np.float32), g.fresh()))
    ones = g.add('ConstantOfShape', count,
                 value=numpy_helper.from_array(np.ones(1, np.float32), g.fresh()))
    kept = g.add('Cast', g.add('ScatterND', zeros, where, ones), to=TensorProto.BOOL)
    out = _survivors_first(g, rows, kept, shape, dtypes[0])
    g.add('Reshape', out, shape['data'], out=result)
    return g.nodes


def _class_scores(g, rows, score, dtype, params):
    """(B, C, N) NonMaxSuppression scores: row ``n``'s score in its class ``C`` slot, -inf
    in the others (C = 1 when classes are ignored)."""
    if params['id_index'] < 0 or params['force']:
        return g.add('Unsqueeze', score, g.const([1], np.int64))
    ids = g.add('Cast', g.add('Cast', _column(g, rows, params['id_index']),
                              to=TensorProto.INT32), to=TensorProto.INT64)
    ids = g.add('Max', ids, g.const(0, np.int64))  # ids < 0 are invalid rows: scored -inf anyway
    depth = g.add('Add', g.add('ReduceMax', ids, keepdims=0), g.const(1, np.int64))
    hot = g.add('OneHot', ids, depth, g.const([0, 1], np.int64), axis=1)  # (B, C, N)
    mine = g.add('Equal', hot, g.const(1, np.int64))
    return g.add('Where', mine, g.add('Unsqueeze', score, g.const([1], np.int64)),
                 g.const(-np.inf, dtype))


def _nms_params(attrs):
    in_format, out_format = attrs.get('in_format', 'corner'), attrs.get('out_format', 'corner')
    if in_format != out_format:
        raise NotImplementedError(f"box_nms with in_format {in_format!r} != out_format "
                                  f"{out_format!r}")
    return dict(
        overlap=dmlc_float(attrs.get('overlap_thresh', '0.5'), 'overlap_thresh'),
        valid=dmlc_float(attrs.get('valid_thresh', '0'), 'valid_thresh'),
        topk=as_int(attrs.get('topk', '-1'), 'topk'),
        coord_start=as_int(attrs.get('coord_start', '2'), 'coord_start'),
        score_index=as_int(attrs.get('score_index', '1'), 'score_index'),
        id_index=as_int(attrs.get('id_index', '-1'), 'id_index'),
        background_id=as_int(attrs.get('background_id', '-1'), 'background_id'),
        force=as_bool(attrs.get('force_suppress', 'False'), 'force_suppress'),
        center=in_format == 'center')


def _column(g, rows, index):
    """Column ``index`` (B, N) of ``rows`` (B, N, W)."""
    return g.add('Gather', rows, g.const(index, np.int64), axis=2)


def _sorted_rows(g, data, dtype, params):
    """Rows (B, N, W) by descending valid score; the (B, N) valid mask in that order; shapes.

    Invalid rows get key -inf, below every valid score (``score > valid_thresh`` excludes
    -inf), so they sort last whatever their order.
    """
    shape = {'data': g.add('Shape', data)}
    shape['nw'] = g.add('Slice', shape['data'], g.const([-2], np.int64),
                        g.const([np.iinfo(np.int64).max], np.int64))
    shape['rows'] = g.add('Concat', g.const([-1], np.int64), shape['nw'], axis=0)
    shape['n'] = g.add('Slice', shape['nw'], g.const([0], np.int64), g.const([1], np.int64))
    rows = g.add('Reshape', data, shape['rows'])
    score = _column(g, rows, params['score_index'])
    valid = g.add('Greater', score, g.const(np.float32(params['valid']), dtype))
    if params['id_index'] >= 0:
        background = g.add('Equal', _column(g, rows, params['id_index']),
                           g.const(params['background_id'], dtype))
        valid = g.add('And', valid, g.add('Not', background))
    key = g.add('Where', valid, score, g.const(-np.inf, dtype))
    _, order = g.add('TopK', key, shape['n'], outputs=2, axis=1, largest=1, sorted=1)
    shape['full'] = g.add('Shape', rows)
    index = g.add('Expand', g.add('Reshape', order, g.const([0, 0, 1], np.int64)), shape['full'])
    sorted_rows = g.add('GatherElements', rows, index, axis=1)
    return sorted_rows, g.add('GatherElements', valid, order, axis=1), shape


def _box_extents(g, rows, dtype, params):
    """Per row (B, N): x and y intervals (lo, hi) as Intersect reads them, and BoxArea."""
    a1, a2, a3, a4 = (_column(g, rows, params['coord_start'] + k) for k in range(4))
    zero = g.const(0, dtype)
    if params['center']:
        half_w, half_h = (g.add('Div', v, g.const(2, dtype)) for v in (a3, a4))
        x = (g.add('Sub', a1, half_w), g.add('Add', a1, half_w))
        y = (g.add('Sub', a2, half_h), g.add('Add', a2, half_h))
        width, height = a3, a4
    else:
        x, y = (a1, a3), (a2, a4)
        width, height = g.add('Sub', a3, a1), g.add('Sub', a4, a2)
    negative = g.add('Or', g.add('Less', width, zero), g.add('Less', height, zero))
    area = g.add('Where', negative, zero, g.add('Mul', width, height))
    return x, y, area


def _greedy_nms(g, rows, valid, shape, dtype, params):
    """(B, N) bool: rows that take part (valid, among the first ``topk``) and survive."""
    x, y, area = _box_extents(g, rows, dtype, params)
    n = g.add('Reshape', shape['n'], g.const([], np.int64))  # scalar N
    position = g.add('Range', g.const(0, np.int64), n, g.const(1, np.int64))
    steps = n if params['topk'] < 0 else g.add('Min', n, g.const(params['topk'], np.int64))
    alive = g.add('And', valid, g.add('Less', position, steps))
    # valid rows come first: no reference row past the largest valid count needs a visit
    counts = g.add('ReduceSum', g.add('Cast', valid, to=TensorProto.INT64),
                   g.const([1], np.int64), keepdims=0)
    steps = g.add('Min', steps, g.add('ReduceMax', counts, keepdims=0))
    same_class = None
    if params['id_index'] >= 0 and not params['force']:
        same_class = g.add('Cast', _column(g, rows, params['id_index']), to=TensorProto.INT32)
    body = _nms_step(g, x, y, area, same_class, position, dtype, params)
    return g.add('Loop', steps, '', alive, body=body)


def _nms_step(g, x, y, area, class_id, position, dtype, params):
    """Loop body for reference row ``i``: an alive row ``i`` suppresses later alive rows.

    Native nms_impl: ``w = min(right) - max(left)`` (``a > b ? a : b`` forms), ``w > 0 ? w : 0``,
    ``i = w_x * w_y``, ``iou = i / ((area_ref + area_pos) - i)``, suppress iff
    ``iou > overlap_thresh``. Outer values are read through the enclosing scope.
    """
    b = _Nodes(g.fresh() + '_step', g.initializer)
    # body input/output names must be unique in the model: one loop per box_nms node
    step, cond_in, alive_in = (f'{b.prefix}_{n}' for n in ('i', 'cond_in', 'alive_in'))
    index = b.add('Reshape', step, b.const([1], np.int64))

    def ref(values):  # (B, 1) value of the reference row
        return b.add('Gather', values, index, axis=1)

    def overlap(lo, hi):
        ref_lo, ref_hi = ref(lo), ref(hi)
        # corner format reads (ref, pos), center format (pos, ref): same unless NaN
        first_lo, second_lo = (lo, ref_lo) if params['center'] else (ref_lo, lo)
        first_hi, second_hi = (hi, ref_hi) if params['center'] else (ref_hi, hi)
        left = b.add('Where', b.add('Greater', first_lo, second_lo), first_lo, second_lo)
        right = b.add('Where', b.add('Less', first_hi, second_hi), first_hi, second_hi)
        width = b.add('Sub', right, left)
        zero = b.const(0, dtype)
        return b.add('Where', b.add('Greater', width, zero), width, zero)

    inter = b.add('Mul', overlap(*x), overlap(*y))
    iou = b.add('Div', inter, b.add('Sub', b.add('Add', ref(area), area), inter))
    hit = b.add('Greater', iou, b.const(np.float32(params['overlap']), dtype))
    hit = b.add('And', hit, b.add('Greater', position, step))
    if class_id is not None:
        hit = b.add('And', hit, b.add('Equal', ref(class_id), class_id))
    hit = b.add('And', hit, ref(alive_in))
    alive_out = b.add('And', alive_in, b.add('Not', hit))
    cond_out = b.add('Identity', cond_in)
    return helper.make_graph(
        b.nodes, b.prefix,
        [helper.make_tensor_value_info(step, TensorProto.INT64, []),
         helper.make_tensor_value_info(cond_in, TensorProto.BOOL, []),
         helper.make_tensor_value_info(alive_in, TensorProto.BOOL, [None, None])],
        [helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
         helper.make_tensor_value_info(alive_out, TensorProto.BOOL, [None, None])])


def _survivors_first(g, rows, alive, shape, dtype):
    """Alive rows moved to the front in order, -1 rows after them: (B, N, W)."""
    n = g.add('Reshape', shape['n'], g.const([], np.int64))
    position = g.add('Range', g.const(0, np.int64), n, g.const(1, np.int64))
    rank = g.add('Cast', g.add('Sub', n, position), to=TensorProto.DOUBLE)  # N..1, exact
    key = g.add('Where', alive, rank, g.const(0, np.float64))
    _, order = g.add('TopK', key, shape['n'], outputs=2, axis=1, largest=1, sorted=1)
    order3 = g.add('Reshape', order, g.const([0, 0, 1], np.int64))
    moved = g.add('GatherElements', rows, g.add('Expand', order3, shape['full']), axis=1)
    kept = g.add('Reshape', g.add('GatherElements', alive, order, axis=1),
                 g.const([0, 0, 1], np.int64))
    return g.add('Where', kept, moved, g.const(-1, dtype))


#: Converters for operators mx2onnx does not have.
CONVERTERS = {
    '_full': convert_full,
    '_greater_equal': _comparison('GreaterOrEqual', with_scalar=False),
    '_greater_equal_scalar': _comparison('GreaterOrEqual', with_scalar=True),
    '_np_cumsum': convert_cumsum,
    '_contrib_index_copy': convert_index_copy,
}

#: Replacements for mx2onnx converters; each factory receives the converter it replaces.
REPLACED = {
    'L2Normalization': lambda original: convert_l2_normalization,
    'exp': lambda original: convert_exp,
    'Pooling': pooling_converter,
    'BatchNorm': batchnorm_converter,
}

#: ``_contrib_box_nms`` converters by name: ``standard`` (ONNX NonMaxSuppression, the default)
#: and ``exact`` (an ONNX Loop reproducing MXNet's greedy visit order, ties included).
NMS_CONVERTERS = {'standard': convert_box_nms_standard, 'exact': convert_box_nms}
