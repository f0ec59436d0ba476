"""SSD network presets: the one table holding every layer and anchor number of the networks.

Each named network has one or more variants; a variant is chosen by the requested data shape
(``min_shape``), as mxnet-ssd's ``symbol_factory.get_config`` does (VGG16-reduced switches to
its 512 layout at 448 pixels). Values follow mxnet-ssd's configuration, with two documented
exceptions marked ``NOTE`` in the table.

Anchor numbers are in the units of ``MultiBoxPrior``: ``sizes`` are fractions of the image
side, one ``(s_k, sqrt(s_k * s_k+1))`` pair per layer, so a layer has
``len(sizes) - 1 + len(ratios)`` anchors per location. ``steps`` are in pixels of the preset's
``base_shape`` and are used only when the data shape equals it; at any other shape every layer
uses ``MultiBoxPrior``'s automatic step (one cell of its own feature map), so the anchors
follow the feature maps of whatever input the graph is bound to.
"""
import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Tuple

from . import backbones

__all__ = ['SSDConfig', 'PRESETS', 'caffe_sizes', 'get_config', 'network_names']

# the per-layer field names that must all have one entry per output layer
_PER_LAYER = ('from_layers', 'num_filters', 'strides', 'pads', 'kernels', 'sizes', 'ratios',
              'normalizations')


@dataclass(frozen=True)
class SSDConfig:
    """One SSD layout: a body, the layers predictions are made from, and their anchors.

    Per-layer tuples (one entry per output layer, in order):

    - ``from_layers``: the body layer name, or ``''`` for an extra layer appended to the
      previous output (1x1 convolution with ``max(128, filters // 2)`` filters, ReLU, then a
      ``kernels x kernels`` convolution with ``num_filters`` filters, ``strides``, ``pads``, ReLU);
    - ``num_filters``, ``strides``, ``pads``, ``kernels``: the extra layer's numbers; ``-1``
      for body layers, except ``num_filters`` of an L2-normalised body layer (its channels);
    - ``sizes`` (pairs of fractions) and ``ratios`` (width/height): ``MultiBoxPrior``'s;
    - ``normalizations``: initial value of the learnable per-channel scale after an L2
      normalisation of the layer, or ``-1`` for none.

    ``steps`` is empty (automatic) or holds one step per layer in pixels of ``base_shape``.
    ``extra_batchnorm`` puts a BatchNorm between each extra convolution and its ReLU (GluonCV's
    ``FeatureExpander`` does for its MobileNet SSDs; without it, extra layers trained from
    scratch collapse to constant outputs within an epoch).
    ``body`` maps the data Symbol to a dict of named body layers (see ``symbols.backbones``).
    """
    body: Callable
    base_shape: int
    min_shape: int
    from_layers: Tuple[str, ...]
    num_filters: Tuple[int, ...]
    strides: Tuple[int, ...]
    pads: Tuple[int, ...]
    kernels: Tuple[int, ...]
    sizes: Tuple[Tuple[float, ...], ...]
    ratios: Tuple[Tuple[float, ...], ...]
    normalizations: Tuple[float, ...]
    steps: Tuple[float, ...] = ()
    extra_batchnorm: bool = False

    def __post_init__(self):
        counts = {field: len(getattr(self, field)) for field in _PER_LAYER}
        if self.steps:
            counts['steps'] = len(self.steps)
        if len(set(counts.values())) != 1:
            listed = ', '.join(f"{field}={n}" for field, n in counts.items())
            raise ValueError(f"inconsistent SSD preset: every per-layer setting needs one entry "
                             f"per output layer, got {listed}")
        if not self.from_layers or not self.from_layers[0]:
            raise ValueError("inconsistent SSD preset: the first of from_layers must name a "
                             f"body layer, got {self.from_layers!r}")

    @property
    def num_anchors(self):
        """Anchors per location of each layer: ``len(sizes) - 1 + len(ratios)``."""
        return tuple(len(s) - 1 + len(r) for s, r in zip(self.sizes, self.ratios))

    def prior_steps(self, data_shape):
        """``MultiBoxPrior`` steps (fractions) per layer for ``data_shape``; -1 means automatic."""
        height, width = _as_hw(data_shape)
        if self.steps and height == width == self.base_shape:
            return tuple(step / self.base_shape for step in self.steps)
        return (-1.0,) * len(self.from_layers)


def caffe_sizes(min_scale, max_scale, num_layers):
    """Anchor sizes of Caffe SSD's scale schedule (``ssd_pascal.py``), as mxnet-ssd computes them.

    Scales are whole percents from ``min_scale`` to ``max_scale`` in equal integer steps over the
    layers after the first; the first layer gets half of ``min_scale`` (rounded down to a
    percent) and ``min_scale``. Layer k gets ``(s_k, sqrt(s_k * s_k+1))``.
    """
    low, high = int(min_scale * 100), int(max_scale * 100)
    step = (high - low) // (num_layers - 2)
    mins = [int(min_scale * 50) / 100] + [p / 100 for p in range(low, high + 1, step)]
    maxs = [min_scale] + [(p + step) / 100 for p in range(low, high + 1, step)]
    return tuple((a, math.sqrt(a * b)) for a, b in zip(mins[:num_layers], maxs[:num_layers]))


_R3 = (1.0, 2.0, 0.5)
_R5 = (1.0, 2.0, 0.5, 3.0, 1.0 / 3)

_MOBILENET = dict(
    base_shape=512, min_shape=300,
    # GluonCV's names for the last ReLU at stride 16 and at stride 32 (mxnet-ssd: conv_12_relu
    # and conv_14_relu of its own MobileNet symbol)
    from_layers=('relu22', 'relu26', '', '', '', '', ''),
    num_filters=(-1, -1, 512, 256, 256, 256, 256),
    strides=(-1, -1, 2, 2, 2, 2, 2),
    pads=(-1, -1, 1, 1, 1, 1, 1),
    kernels=(-1, -1, 3, 3, 3, 3, 3),
    sizes=caffe_sizes(0.15, 0.9, 7),
    ratios=(_R3, _R5, _R5, _R5, _R5, _R3, _R3),
    normalizations=(-1,) * 7,
    steps=(),
    extra_batchnorm=True)

# Below 300 pixels the stride-16 first layer leaves about 1.7 positive anchors per object (4.1
# with a stride-8 first layer, measured on the synthetic set at 256), too few to train from
# scratch: the small-input variant adds GluonCV's last stride-8 ReLU in front, the way SSD300
# predicts from VGG16's stride-8 relu4_3. Same sizes and ratios table, shifted by one layer.
_MOBILENET_SMALL = dict(
    _MOBILENET, base_shape=256, min_shape=0,
    from_layers=('relu10', 'relu22', 'relu26', '', '', '', ''),
    num_filters=(-1, -1, -1, 512, 256, 256, 256),
    strides=(-1, -1, -1, 2, 2, 2, 2),
    pads=(-1, -1, -1, 1, 1, 1, 1),
    kernels=(-1, -1, -1, 3, 3, 3, 3))

PRESETS = {
    'vgg16_reduced': (
        # SSD300: 38^2*4 + 19^2*6 + 10^2*6 + 5^2*6 + 3^2*4 + 1*4 = 8732 anchors. These sizes are
        # GluonCV's ssd_300_vgg16_atrous pixel sizes (30, 60, 111, ..., 315) divided by 300.
        SSDConfig(
            body=backbones.vgg16_reduced, base_shape=300, min_shape=0,
            from_layers=('relu4_3', 'relu7', '', '', '', ''),
            num_filters=(512, -1, 512, 256, 256, 256),
            strides=(-1, -1, 2, 2, 1, 1),
            pads=(-1, -1, 1, 1, 0, 0),
            kernels=(-1, -1, 3, 3, 3, 3),
            sizes=caffe_sizes(0.2, 0.9, 6),
            ratios=(_R3, _R5, _R5, _R5, _R3, _R3),
            normalizations=(20, -1, -1, -1, -1, -1),
            steps=(8, 16, 32, 64, 100, 300)),
        # SSD512: 64^2*4 + 32^2*6 + 16^2*6 + 8^2*6 + 4^2*6 + 2^2*4 + 1*4 = 24564 anchors.
        # NOTE kernels: the last extra layer is 4x4 pad 1 (2x2 -> 1x1), as in Caffe's SSD512 and
        # GluonCV; mxnet-ssd's 3x3 pad 1 keeps it 2x2 and would give 24576 anchors.
        # NOTE sizes: mxnet-ssd's schedule starts at 0.07; GluonCV's ssd_512_vgg16_atrous starts
        # at 0.1 (51.2 px), so its first layer is (0.1, 0.1225) instead of (0.07, 0.1025) and the
        # six other layers agree (see symbols.convert.gluoncv_overrides).
        SSDConfig(
            body=backbones.vgg16_reduced, base_shape=512, min_shape=448,
            from_layers=('relu4_3', 'relu7', '', '', '', '', ''),
            num_filters=(512, -1, 512, 256, 256, 256, 256),
            strides=(-1, -1, 2, 2, 2, 2, 1),
            pads=(-1, -1, 1, 1, 1, 1, 1),
            kernels=(-1, -1, 3, 3, 3, 3, 4),
            sizes=caffe_sizes(0.15, 0.9, 7),
            ratios=(_R3, _R5, _R5, _R5, _R5, _R3, _R3),
            normalizations=(20, -1, -1, -1, -1, -1, -1),
            steps=(8, 16, 32, 64, 128, 256, 512)),
    ),
    # mxnet-ssd's mobilenet preset on GluonCV's MobileNet bodies; steps automatic.
    'mobilenet1.0': (SSDConfig(body=partial(backbones.mobilenet, multiplier=1.0), **_MOBILENET_SMALL),
                     SSDConfig(body=partial(backbones.mobilenet, multiplier=1.0), **_MOBILENET)),
    'mobilenet0.25': (SSDConfig(body=partial(backbones.mobilenet, multiplier=0.25), **_MOBILENET_SMALL),
                      SSDConfig(body=partial(backbones.mobilenet, multiplier=0.25), **_MOBILENET)),
}


def network_names():
    """The known network names, sorted."""
    return sorted(PRESETS)


def get_config(network, data_shape, **overrides):
    """The preset of ``network`` for ``data_shape`` (int or ``(H, W)``), with fields replaced.

    Raises ValueError for an unknown network (listing the known ones), for an unknown
    override, or when the overridden per-layer settings disagree in length.
    """
    if network not in PRESETS:
        raise ValueError(f"unknown network {network!r}; known networks: "
                         f"{', '.join(network_names())}")
    height, width = _as_hw(data_shape)
    config = [c for c in PRESETS[network] if c.min_shape <= min(height, width)][-1]
    fields = {f.name for f in dataclasses.fields(SSDConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown preset setting(s) {unknown}; settings: {sorted(fields)}")
    return dataclasses.replace(config, **_as_tuples(overrides))


def _as_tuples(overrides):
    """Lists (also nested ones, as in ``sizes``) to tuples, so configs stay hashable."""
    def convert(value):
        return tuple(convert(v) for v in value) if isinstance(value, (list, tuple)) else value
    return {key: convert(value) for key, value in overrides.items()}


def _as_hw(data_shape):
    """``300`` or ``(300, 300)`` -> ``(300, 300)``."""
    if isinstance(data_shape, int):
        return data_shape, data_shape
    height, width = data_shape
    return int(height), int(width)
