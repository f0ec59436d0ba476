"""Build ``mx.contrib.symbol``/``mx.contrib.ndarray``-style functions from the blocks.

Each function has the native op's signature: the inputs first (default None), then the op's
parameters with the native defaults, then ``name``; so an mxnet-ssd symbol builder migrates
by replacing ``mx.contrib.symbol.`` with ``multibox.symbol.``. The signature is taken from the
block's constructor, so the two cannot drift apart.
"""
import inspect

import mxnet as mx

__all__ = ['make_function']


def make_function(block_class, input_names, symbolic):
    """A function ``f(*inputs, **params, name=None)`` that runs a fresh ``block_class``.

    ``symbolic`` selects the Symbol flavour (missing inputs become variables ``{name}_{input}``,
    multiple outputs are returned as a Group) or the NDArray flavour (a list for multiple
    outputs, ``out=`` supported).
    """
    op_params = [p for p in inspect.signature(block_class.__init__).parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != 'self']
    extra = ['name'] if symbolic else ['name', 'out']
    parameters = ([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)
                   for n in input_names] + op_params
                  + [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in extra])
    signature = inspect.Signature(parameters)

    def function(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        name = values.pop('name')
        out = values.pop('out', None)
        inputs = [values.pop(n) for n in input_names]
        prefix = f"{name}_" if name else None
        block = block_class(prefix=prefix, **values)
        if symbolic:
            return _call_symbolic(block, inputs, input_names, name or block.prefix.rstrip('_'))
        return _call_ndarray(block, inputs, input_names, out)

    function.__name__ = function.__qualname__ = block_class.__name__
    function.__signature__ = signature
    function.__doc__ = (f"Functional form of :class:`multibox.{block_class.__name__}` "
                        f"({'Symbol' if symbolic else 'NDArray'} inputs).\n\n{block_class.__doc__}")
    return function


def _call_symbolic(block, inputs, input_names, name):
    inputs = [mx.sym.var(f"{name}_{n}") if x is None else x for x, n in zip(inputs, input_names)]
    for x, n in zip(inputs, input_names):
        if not isinstance(x, mx.sym.Symbol):
            raise TypeError(f"multibox.symbol.{type(block).__name__}: {n} must be a Symbol, "
                            f"got {type(x).__name__} (use multibox.ndarray for NDArrays)")
    outputs = block(*inputs)
    return mx.sym.Group(list(outputs)) if isinstance(outputs, (list, tuple)) else outputs


def _call_ndarray(block, inputs, input_names, out):
    for x, n in zip(inputs, input_names):
        if not isinstance(x, mx.nd.NDArray):
            raise TypeError(f"multibox.ndarray.{type(block).__name__}: {n} must be an NDArray, "
                            f"got {type(x).__name__}")
    outputs = block(*inputs)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else outputs
    if out is None:
        return outputs
    targets = out if isinstance(out, (list, tuple)) else [out]
    for source, target in zip(outputs if isinstance(outputs, list) else [outputs], targets):
        source.copyto(target)
    return out
