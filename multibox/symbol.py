"""Drop-in replacements for the contrib ``MultiBox*`` symbol functions: same signatures, Symbol in and out.

``MultiBoxTarget`` returns a 3-output group (``[0]`` loc_target, ``[1]`` loc_mask, ``[2]``
cls_target) like the native op.
"""
from .detection import MultiBoxDetection as _Detection
from .functional import make_function
from .prior import MultiBoxPrior as _Prior
from .target import MultiBoxTarget as _Target

__all__ = ['MultiBoxPrior', 'MultiBoxTarget', 'MultiBoxDetection']

MultiBoxPrior = make_function(_Prior, ['data'], 'symbol')
MultiBoxTarget = make_function(_Target, ['anchor', 'label', 'cls_pred'], 'symbol')
MultiBoxDetection = make_function(_Detection, ['cls_prob', 'loc_pred', 'anchor'], 'symbol')
