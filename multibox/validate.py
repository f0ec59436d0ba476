"""Input checks shared by the three blocks, run on NDArray inputs before the graph runs.

``hybrid_forward`` may not read shapes (it must hybridize and export), so the blocks check
concrete NDArray inputs in ``forward`` instead: shapes and dtypes are metadata there and reading
them costs no device synchronisation. Symbol inputs are checked by MXNet's shape inference.
"""
import functools

import mxnet as mx
import numpy as np
from mxnet import gluon, nd

__all__ = ['CheckedBlock', 'check_array', 'check_anchors', 'accepts_numpy', 'as_legacy']

# numpy-mode arrays and Symbols (MXNet 1.9.1 gives the numpy Symbol class no public name)
_NUMPY_TYPES = (mx.np.ndarray, mx.sym.np._Symbol)


def check_array(block_name, arg_name, array, ndim=None, min_ndim=None):
    """Raise TypeError/ValueError naming ``block_name(arg_name)`` if ``array`` is unusable.

    Like the native ops, only float32 is accepted (float16/float64 raise).
    """
    where = f"{block_name}: {arg_name}"
    if not isinstance(array, nd.NDArray):
        raise TypeError(f"{where} must be an NDArray or Symbol, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise TypeError(f"{where} must be float32 like the native op, got {np.dtype(array.dtype).name}"
                        f" (cast with .astype('float32'))")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{where} must have {ndim} dimensions, got shape {array.shape}")
    if min_ndim is not None and array.ndim < min_ndim:
        raise ValueError(f"{where} must have at least {min_ndim} dimensions, got shape {array.shape}")


def check_anchors(block_name, anchor):
    """Check that ``anchor`` is a float32 ``(1, N, 4)`` array with N > 0; return N."""
    check_array(block_name, 'anchor', anchor, ndim=3)
    if anchor.shape[0] != 1 or anchor.shape[2] != 4 or anchor.shape[1] < 1:
        raise ValueError(f"{block_name}: anchor must have shape (1, N, 4) with N > 0, got {anchor.shape}")
    return anchor.shape[1]


def as_legacy(x):
    """A legacy NDArray/Symbol view of ``x`` (an ``mx.np`` array or numpy Symbol): no copy."""
    return x.as_nd_ndarray() if isinstance(x, _NUMPY_TYPES) else x


def accepts_numpy(hybrid_forward):
    """Decorate a ``hybrid_forward`` made of legacy operators so that it also takes ``mx.np``.

    MXNet's legacy operators refuse ``mx.np`` arrays and numpy Symbols (numpy mode,
    ``npx.set_np()``), so those inputs are viewed as legacy arrays for the graph and the
    outputs viewed back as ``mx.np`` (both views share the data). Covers the imperative call,
    a hybridized block and a parent numpy-mode HybridBlock tracing this one.
    """
    @functools.wraps(hybrid_forward)
    def wrapper(self, F, *inputs):
        if not any(isinstance(x, _NUMPY_TYPES) for x in inputs):
            return hybrid_forward(self, F, *inputs)
        outputs = hybrid_forward(self, F, *[as_legacy(x) for x in inputs])
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(out.as_np_ndarray() for out in outputs)
        return outputs.as_np_ndarray()
    return wrapper


class CheckedBlock(gluon.HybridBlock):
    """HybridBlock that validates NDArray inputs with ``check_inputs`` before running.

    ``mx.np`` arrays count as NDArrays (they are a subclass); see :func:`accepts_numpy`.
    """

    def check_inputs(self, *arrays):
        """Override: raise a clear error for unusable inputs (shapes, dtypes)."""

    def forward(self, x, *args):
        if isinstance(x, nd.NDArray):
            self.check_inputs(x, *args)
        return super().forward(x, *args)
