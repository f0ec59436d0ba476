"""SSD networks (VGG16-reduced, MobileNet) built from the project's MultiBox operators.

``get_symbol_train`` and ``get_symbol`` are mxnet-ssd's builder functions; the networks and
their anchors live in one table, ``symbols.presets.PRESETS``.
"""
from .presets import SSDConfig, get_config, network_names
from .ssd import get_symbol, get_symbol_train

__all__ = ['get_symbol_train', 'get_symbol', 'get_config', 'network_names', 'SSDConfig']
