"""Build ``mx.contrib.symbol``/``mx.contrib.ndarray``/``mx.npx``-style functions from the blocks.

Each function has the native op's signature: the inputs first (default None), then the op's
parameters with the native defaults, then ``name`` (and ``out`` for arrays); so an mxnet-ssd
symbol builder migrates by replacing ``mx.contrib.symbol.`` with ``multibox.symbol.``. The
signature is taken from the block's constructor, so the two cannot drift apart.

Symbol outputs carry the native op's names: ``{name}_output`` for MultiBoxPrior and
MultiBoxDetection, ``{name}_loc_target``, ``{name}_loc_mask``, ``{name}_cls_target`` for
MultiBoxTarget, where ``name`` is resolved by the current ``mx.name.NameManager`` exactly as
for the native op (``multiboxprior0``... when none is given). Code that looks outputs up by name
(``get_internals()['relu4_3_anchors_output']``, monitors) keeps working.
"""
import inspect

import mxnet as mx

__all__ = ['make_function', 'FLAVOURS']

FLAVOURS = ('symbol', 'ndarray', 'numpy')

# MultiBoxTarget's output names, as the native op lists them
TARGET_OUTPUTS = ('loc_target', 'loc_mask', 'cls_target')


def make_function(block_class, input_names, flavour, function_name=None):
    """A function ``f(*inputs, **params, name=None)`` that runs a fresh ``block_class``.

    ``flavour``: ``'symbol'`` (missing inputs become variables ``{name}_{input}``, multiple
    outputs are returned as a Group, outputs named as natively), ``'ndarray'`` (legacy
    NDArrays, also while numpy mode is on; a list for multiple outputs, ``out=`` supported) or
    ``'numpy'`` (``mx.np`` arrays in and out, like ``mx.npx``; ``out=`` supported).
    """
    if flavour not in FLAVOURS:
        raise ValueError(f"flavour must be one of {FLAVOURS}, got {flavour!r}")
    op_params = [p for p in inspect.signature(block_class.__init__).parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != 'self']
    extra = {'symbol': ['name'], 'ndarray': ['name', 'out'], 'numpy': ['out', 'name']}[flavour]
    parameters = ([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                   for n in input_names] + op_params
                  + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in extra])
    signature = inspect.Signature(parameters)
    hint = block_class.__name__.lower()  # the native op's name hint: multiboxprior...

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        name = values.pop('name')
        out = values.pop('out', None)
        inputs = [values.pop(n) for n in input_names]
        if flavour == 'symbol':
            name = _native_name(name, hint)
            block = block_class(prefix=f"{name}_", **values)
            return _call_symbolic(block, inputs, input_names, name)
        block = block_class(prefix=f"{name}_" if name else None, **values)
        if flavour == 'ndarray':
            return _call_ndarray(block, inputs, input_names, out)
        return _call_numpy(block, inputs, input_names, out, function.__name__)

    function.__name__ = function.__qualname__ = function_name or block_class.__name__
    function.__signature__ = signature
    kind = {'symbol': 'Symbol', 'ndarray': 'NDArray', 'numpy': 'mx.np.ndarray'}[flavour]
    function.__doc__ = (f"Functional form of :class:`multibox.{block_class.__name__}` "
                        f"({kind} inputs).\n\n{block_class.__doc__}")
    return function


def _native_name(name, hint):
    """The name the native op gets for ``name``: the current NameManager's ``get(name, hint)``.

    MXNet has no public getter for the current manager (``NameManager.current`` is deprecated),
    so this reads it where ``mxnet/symbol/register.py``'s generated op functions do.
    """
    if not hasattr(mx.name.NameManager._current, 'value'):
        mx.name.NameManager._current.value = mx.name.NameManager()
    return mx.name.NameManager._current.value.get(name, hint)


def _call_symbolic(block, inputs, input_names, name):
    inputs = [mx.sym.var(f"{name}_{n}") if x is None else x for x, n in zip(inputs, input_names)]
    for x, n in zip(inputs, input_names):
        if not isinstance(x, mx.sym.Symbol) or isinstance(x, mx.sym.np._Symbol):
            raise TypeError(f"multibox.symbol.{type(block).__name__}: {n} must be a Symbol, "
                            f"got {_type_name(x)} (use multibox.ndarray for NDArrays, "
                            f"multibox.npx for numpy Symbols)")
    with mx.util.np_array(False):  # legacy Symbols, also while numpy mode is on
        outputs = block(*inputs)
    # The last node gets exactly the native name; a plain NameManager keeps it unprefixed.
    with mx.name.NameManager():
        if isinstance(outputs, (list, tuple)):
            return mx.sym.Custom(*outputs, op_type=_TargetOutputs.OP_TYPE, name=name)
        return mx.sym.BlockGrad(outputs, name=name)  # in place: no copy


def _call_ndarray(block, inputs, input_names, out):
    for x, n in zip(inputs, input_names):
        if not isinstance(x, mx.nd.NDArray) or isinstance(x, mx.np.ndarray):
            raise TypeError(f"multibox.ndarray.{type(block).__name__}: {n} must be an NDArray, "
                            f"got {_type_name(x)} (use multibox.npx for mx.np arrays)")
    # Gluon wants numpy arrays out of every block while numpy mode is on; these are legacy
    with mx.util.np_array(False):
        outputs = block(*inputs)
    return _deliver(outputs, out)


def _call_numpy(block, inputs, input_names, out, function_name):
    """``mx.np`` arrays, or the numpy Symbols a numpy-mode HybridBlock is traced with."""
    kind = mx.sym.np._Symbol if isinstance(inputs[0], mx.sym.Symbol) else mx.np.ndarray
    for x, n in zip(inputs, input_names):
        if not isinstance(x, kind):
            raise TypeError(f"multibox.npx.{function_name}: {n} must be an mx.np.ndarray (or "
                            f"a numpy Symbol), got {_type_name(x)} (use multibox.ndarray for "
                            f"legacy NDArrays, multibox.symbol for legacy Symbols)")
    return _deliver(block(*inputs), out)


def _deliver(outputs, out):
    """``outputs`` as a list (several) or array, or copied into ``out`` (which is returned)."""
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else outputs
    if out is None:
        return outputs
    targets = out if isinstance(out, (list, tuple)) else [out]
    for source, target in zip(outputs if isinstance(outputs, list) else [outputs], targets):
        source.copyto(target)
    return out


def _type_name(x):
    if isinstance(x, mx.np.ndarray):
        return 'mx.np.ndarray'
    return 'numpy Symbol' if isinstance(x, mx.sym.np._Symbol) else type(x).__name__


class _TargetOutputs(mx.operator.CustomOp):
    """Passes MultiBoxTarget's three outputs through, so that they bear the native names.

    No standard MXNet operator lists outputs named ``loc_target``/``loc_mask``/``cls_target``
    (a node's outputs are listed as ``{node}_{op's output name}``); a Custom op chooses its own.
    The values are copied unchanged; no gradient flows back (the targets are constants).
    """
    OP_TYPE = 'multibox_target_outputs'

    def forward(self, is_train, req, in_data, out_data, aux):
        for request, source, target in zip(req, in_data, out_data):
            self.assign(target, request, source)

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        for request, grad in zip(req, in_grad):
            self.assign(grad, request, 0)


@mx.operator.register(_TargetOutputs.OP_TYPE)
class _TargetOutputsProp(mx.operator.CustomOpProp):
    def __init__(self):
        super().__init__(need_top_grad=False)

    def list_arguments(self):
        return [f'{n}_in' for n in TARGET_OUTPUTS]

    def list_outputs(self):
        return list(TARGET_OUTPUTS)

    def infer_shape(self, in_shape):
        return in_shape, in_shape, []

    def infer_type(self, in_type):
        return in_type, in_type, []

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        return []

    def create_operator(self, ctx, shapes, dtypes):
        return _TargetOutputs()
