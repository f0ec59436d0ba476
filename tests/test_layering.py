"""The packages import downwards only: multibox <- symbols <- ssd's top-level modules <- ssd.data
<- ssd.export <- ssd.inference <- ssd.training (README.md, Layout).

Read from the source (every ``import``, also those inside functions), so an optional or lazy
import cannot hide a cycle.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
#: Each may import itself and those before it, nothing after it.
LAYERS = ('multibox', 'symbols', 'ssd', 'ssd.data', 'ssd.export', 'ssd.inference', 'ssd.training')
SUBPACKAGES = {layer.split('.')[1] for layer in LAYERS if layer.startswith('ssd.')}


def layer_of(module):
    """The layer of a dotted module name, None for a module outside the project."""
    parts = module.split('.')
    if parts[0] in ('multibox', 'symbols'):
        return parts[0]
    if parts[0] != 'ssd':
        return None
    return f'ssd.{parts[1]}' if len(parts) > 1 and parts[1] in SUBPACKAGES else 'ssd'


def module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def imported_modules(path):
    """The dotted names ``path`` imports (``from A import b`` gives ``A.b``: b may be a module)."""
    package = module_name(path) if path.name == '__init__.py' else module_name(path).rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                anchor = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(anchor + ([base] if base else []))
            yield from (f'{base}.{alias.name}' for alias in node.names)


def project_modules():
    for top in ('multibox', 'symbols', 'ssd'):
        yield from sorted((ROOT / top).rglob('*.py'))


def import_edges():
    """``(importer, imported, importer's layer, imported's layer)`` of every project import."""
    for path in project_modules():
        name = module_name(path)
        for imported in imported_modules(path):
            if layer_of(imported) is not None:
                yield name, imported, layer_of(name), layer_of(imported)


def test_every_module_of_ssd_is_in_a_layer():
    packages = {p.name for p in (ROOT / 'ssd').iterdir() if (p / '__init__.py').is_file()}
    assert packages == SUBPACKAGES, 'a new ssd subpackage needs its place in LAYERS (and README.md, Layout)'


def test_imports_go_downwards_only():
    upward = [f'{importer} imports {imported}' for importer, imported, low, high in import_edges()
              if LAYERS.index(high) > LAYERS.index(low)]
    assert upward == []


def test_multibox_imports_nothing_of_symbols_or_ssd_and_data_nothing_above_it():
    edges = list(import_edges())
    assert {high for _, _, low, high in edges if low == 'multibox'} == {'multibox'}
    assert not {high for _, _, low, high in edges if low == 'ssd.data'} & {'ssd.training', 'ssd.inference',
                                                                           'ssd.export'}
    # the scan sees real edges, lazy imports inside functions included (backends exports on first use)
    found = {(low, high) for _, _, low, high in edges}
    assert {('ssd.training', 'ssd.inference'), ('ssd.inference', 'ssd.export'), ('ssd.export', 'ssd.data'),
            ('symbols', 'multibox')} <= found


def test_the_distwatch_import_leaves_mxnet_unloaded():
    """train.py imports ssd.training.distwatch before MXNet, whose import starts the server and
    scheduler roles of --kv-store dist_*: the package ssd.training must not load the engine."""
    code = 'import sys, ssd.training.distwatch; sys.exit("mxnet" in sys.modules)'
    assert subprocess.run([sys.executable, '-c', code], cwd=ROOT, timeout=60).returncode == 0
