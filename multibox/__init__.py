"""MXNet's contrib MultiBox operators as Gluon HybridBlocks, exact and exportable.

``MultiBoxPrior``, ``MultiBoxTarget`` and ``MultiBoxDetection`` take the same arguments and give
the same outputs as MXNet 1.9.1's native contrib ``MultiBox*`` operators (CPU) while being built only
from MXNet's standard operators. ``multibox.symbol`` and ``multibox.ndarray`` hold functional
drop-ins with the contrib signatures, ``multibox.npx`` those of ``mx.npx`` (numpy mode).
"""
from .detection import MultiBoxDetection
from .prior import MultiBoxPrior
from .target import MultiBoxTarget
from . import ndarray, npx, symbol  # noqa: E402  (they build on the blocks above)

__all__ = ['MultiBoxPrior', 'MultiBoxTarget', 'MultiBoxDetection', 'symbol', 'ndarray', 'npx']
__version__ = '0.1.0'
