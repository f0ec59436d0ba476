"""Drop-in replacements for the contrib ``MultiBox*`` NDArray functions: same signatures, NDArray in and out.

``MultiBoxTarget`` returns a list ``[loc_target, loc_mask, cls_target]`` like the native op.
"""
from .detection import MultiBoxDetection as _Detection
from .functional import make_function
from .prior import MultiBoxPrior as _Prior
from .target import MultiBoxTarget as _Target

__all__ = ['MultiBoxPrior', 'MultiBoxTarget', 'MultiBoxDetection']

MultiBoxPrior = make_function(_Prior, ['data'], 'ndarray')
MultiBoxTarget = make_function(_Target, ['anchor', 'label', 'cls_pred'], 'ndarray')
MultiBoxDetection = make_function(_Detection, ['cls_prob', 'loc_pred', 'anchor'], 'ndarray')
