"""MultiBoxPrior: SSD anchor boxes for one feature map, as the native contrib ``MultiBoxPrior``.

Anchors per location: ``len(sizes) + len(ratios) - 1``, in this order: every size with
``ratios[0]``, then ``sizes[0]`` with each of ``ratios[1:]`` (MXNet ``multibox_prior-inl.h``;
torchvision's ``DefaultBoxGenerator`` makes ``2 + 2 * len(ratios)`` instead).

For a size ``s`` and ratio ``r`` on an ``H x W`` map the box is ``s * sqrt(r) * H / W`` wide and
``s / sqrt(r)`` tall in normalized units, i.e. ``s * sqrt(r)`` by ``s / sqrt(r)`` of the image
height in pixels when the image has the map's aspect (the ``H / W`` factor comes from MXNet
PR #7083). Every value is computed in the native op's float32 operation order
(docs/ops-semantics.md §2.3), so the output equals the native CPU op bit for bit.

Deliberate difference: the native op silently accepts non-positive sizes or ratios (inverted,
infinite or NaN boxes); this block refuses them with a ValueError.
"""
import mxnet as mx
import numpy as np
from mxnet import nd

from .params import as_bool, float_tuple
from .validate import CheckedBlock, accepts_numpy, check_array

__all__ = ['MultiBoxPrior']

_CACHE_SIZE = 64  # feature-map shapes remembered per block


class MultiBoxPrior(CheckedBlock):
    """Generate corner anchors centred on every cell of a feature map.

    Parameters
    ----------
    sizes : tuple of float
        Box sizes as fractions of the image height (``"(0.1,0.141)"`` strings accepted).
    ratios : tuple of float
        Width/height aspect ratios; ``ratios[0]`` applies to every size.
    clip : bool
        Clamp every coordinate to [0, 1].
    steps : (step_y, step_x)
        Distance between anchor centres in normalized units; if either is <= 0 both become
        ``(1/H, 1/W)``.
    offsets : (offset_y, offset_x)
        Centre offset inside a cell, each in [0, 1].

    Inputs: ``data`` of shape ``(B, C, H, W)`` (any float32 array with ndim >= 4; only dims 2
    and 3 are used, never the values).
    Output: ``(1, H * W * num_anchors, 4)`` float32 corner boxes ``[xmin, ymin, xmax, ymax]``,
    normalized; row ``(y * W + x) * num_anchors + k``. No gradient flows to ``data``.
    ``mx.np`` inputs (numpy mode) give ``mx.np`` outputs.
    """

    def __init__(self, sizes=(1.0,), ratios=(1.0,), clip=False, steps=(-1.0, -1.0),
                 offsets=(0.5, 0.5), **kwargs):
        super().__init__(**kwargs)
        self.sizes = _positive_tuple(sizes, 'sizes')
        self.ratios = _positive_tuple(ratios, 'ratios')
        self.clip = as_bool(clip, 'clip')
        self.steps = _steps(steps)
        self.offsets = float_tuple(offsets, 'offsets', length=2)
        if not all(0.0 <= off <= 1.0 for off in self.offsets):
            raise ValueError(f"MultiBoxPrior: offsets must lie in [0, 1], got {self.offsets}")
        self._anchor_cache = {}

    @property
    def num_anchors(self):
        """Anchors per feature-map location: ``len(sizes) + len(ratios) - 1``."""
        return len(self.sizes) + len(self.ratios) - 1

    def shapes(self):
        """The ``(size, sqrt(ratio))`` pair of each anchor type, in output order."""
        pairs = [(size, self.ratios[0]) for size in self.sizes]
        pairs += [(self.sizes[0], ratio) for ratio in self.ratios[1:]]
        return [(size, float(np.float32(np.sqrt(np.float32(ratio))))) for size, ratio in pairs]

    def forward(self, data):
        """Anchors depend only on the map's height and width: NDArray calls reuse them per shape.

        Symbols (and graphs that contain this block) always compute them in the graph.
        """
        if not isinstance(data, nd.NDArray):
            return super().forward(data)
        shape = data.shape
        numpy = isinstance(data, mx.np.ndarray)  # anchors come back as the input's array type
        key = (shape[2:4], data.context, numpy) if len(shape) >= 4 else None
        cached = self._anchor_cache.get(key)
        if cached is None or data.dtype != np.float32:
            self.check_inputs(data)  # raises for unusable inputs
            if len(self._anchor_cache) >= _CACHE_SIZE:
                self._anchor_cache.clear()
            # a copy: a static_alloc graph reuses its output buffer on the next call
            cached = self._anchor_cache[key] = super().forward(data).copy()
        # a new array: callers may modify their anchors in place
        return mx.np.copy(cached) if numpy else nd.identity(cached)

    def hybridize(self, active=True, **kwargs):
        self._anchor_cache.clear()  # the next call builds (and so can export) the graph
        super().hybridize(active, **kwargs)

    def check_inputs(self, data):
        check_array('MultiBoxPrior', 'data', data, min_ndim=4)
        if data.shape[2] == 0 or data.shape[3] == 0:
            raise ValueError(f"MultiBoxPrior: data must have a non-empty feature map, got shape {data.shape}")

    @accepts_numpy
    def hybrid_forward(self, F, data):
        extent = F.cast(F.slice_axis(F.shape_array(data), axis=0, begin=2, end=4), 'float32')  # [H, W]
        height = F.slice_axis(extent, axis=0, begin=0, end=1)  # (1,)
        width = F.slice_axis(extent, axis=0, begin=1, end=2)  # (1,)
        center_y = self._centers(F, data, 2, height, self.offsets[0], self.steps[0])  # (H,)
        center_x = self._centers(F, data, 3, width, self.offsets[1], self.steps[1])  # (W,)
        # centres as (H, W, 1, 4) rows [cx, cy, cx, cy]; adding the zeros is exact (no -0 here)
        centers = F.broadcast_add(F.reshape(F.stack(center_x, F.zeros_like(center_x), center_x,
                                                    F.zeros_like(center_x), axis=-1), (1, -1, 1, 4)),
                                  F.reshape(F.stack(F.zeros_like(center_y), center_y,
                                                    F.zeros_like(center_y), center_y, axis=-1), (-1, 1, 1, 4)))
        half_w, half_h = self._half_extents(F, height, width)  # (A,) each
        extents = F.stack(-half_w, -half_h, half_w, half_h, axis=-1)  # (A, 4)
        # c - h == c + (-h) exactly, so one broadcast add gives every corner
        anchors = F.reshape(F.broadcast_add(centers, F.expand_dims(extents, axis=0)), (1, -1, 4))
        if self.clip:
            anchors = F.clip(anchors, 0.0, 1.0)  # keeps NaN, like the native clip
        return F.stop_gradient(anchors)

    @staticmethod
    def _centers(F, data, axis, extent, offset, step):
        """``(index + offset) * step``; ``step`` defaults to ``1 / extent`` (float32 division)."""
        index = F.contrib.arange_like(data, axis=axis, start=offset)  # exact index + offset
        if step is None:
            return F.broadcast_mul(index, 1.0 / extent)
        return index * step

    def _half_extents(self, F, height, width):
        """Half widths ``((s*H)/W)*sqrt(r)/2`` and half heights ``(s/sqrt(r))/2``, each (A,).

        Halving is exact, so ``(x * q) / 2 == x * (q / 2)`` bit for bit: one op per anchor type.
        """
        scaled = {size: F.broadcast_div(height * size, width) for size, _ in self.shapes()}
        half_w = [scaled[size] * (root / 2) for size, root in self.shapes()]  # loop over anchor types
        half_h = [float(np.float32(size) / np.float32(root) / np.float32(2)) for size, root in self.shapes()]
        ones = F.ones_like(height)
        return F.concat(*half_w, dim=0), F.concat(*[ones * h for h in half_h], dim=0)


def _positive_tuple(value, name):
    parsed = float_tuple(value, name)
    bad = [v for v in parsed if not v > 0]
    if bad:
        raise ValueError(f"MultiBoxPrior: {name} must be positive, got {bad[0]} in {parsed}")
    return parsed


def _steps(value):
    """``(step_y, step_x)``, or ``(None, None)`` for automatic steps ``(1/H, 1/W)``."""
    step_y, step_x = float_tuple(value, 'steps', length=2)
    if step_y * step_x < 0:
        raise ValueError(f"MultiBoxPrior: steps must be both positive (explicit) or both <= 0 "
                         f"(automatic), got {(step_y, step_x)}")
    if step_y <= 0 or step_x <= 0:
        return (None, None)
    return (step_y, step_x)
