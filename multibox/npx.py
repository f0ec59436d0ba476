"""Drop-in replacements for ``mx.npx.multibox_prior/target/detection`` (numpy mode).

Same signatures as MXNet 1.9.1's ``mx.npx`` functions (which are the contrib operators under
another name): ``mx.np`` arrays in and out, ``multibox_target`` returning a list
``[loc_target, loc_mask, cls_target]``. Inside a numpy-mode HybridBlock they also take the
numpy Symbols the block is traced with, so ``hybridize()`` works; the blocks
(``multibox.MultiBoxPrior``...) can be used there as children as well.
"""
from .detection import MultiBoxDetection as _Detection
from .functional import make_function
from .prior import MultiBoxPrior as _Prior
from .target import MultiBoxTarget as _Target

__all__ = ['multibox_prior', 'multibox_target', 'multibox_detection']

multibox_prior = make_function(_Prior, ['data'], 'numpy', 'multibox_prior')
multibox_target = make_function(_Target, ['anchor', 'label', 'cls_pred'], 'numpy', 'multibox_target')
multibox_detection = make_function(_Detection, ['cls_prob', 'loc_pred', 'anchor'], 'numpy',
                                   'multibox_detection')
