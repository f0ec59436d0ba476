"""imperative == hybridized == multibox.symbol == exported graph run by plain MXNet.

The exported JSON + params are loaded in a subprocess in which ``import multibox`` fails, so
the graph provably needs nothing but MXNet's standard operators.
"""
import json
import os
import subprocess
import sys
import textwrap

import mxnet as mx
import numpy as np
import pytest

import multibox
from conftest import assert_same

pytestmark = pytest.mark.parity


def prior_case(rng):
    params = dict(sizes=(0.3, 0.6), ratios=(1, 2, 0.5), clip=True)
    return 'MultiBoxPrior', params, [mx.nd.array(rng.uniform(size=(2, 3, 5, 7)))]


def target_case(rng):
    anchors = multibox.MultiBoxPrior(sizes=(0.2, 0.4), ratios=(1, 2))(mx.nd.zeros((1, 1, 6, 6)))
    num_anchors = anchors.shape[1]
    boxes = np.sort(rng.uniform(0, 1, (3, 4, 2, 2)), axis=2).transpose(0, 1, 3, 2).reshape(3, 4, 4)
    labels = np.concatenate([rng.randint(0, 5, (3, 4, 1)), boxes], axis=2)
    labels[1, 2:] = -1  # padding rows
    cls_pred = rng.normal(size=(3, 6, num_anchors))
    params = dict(negative_mining_ratio=3, negative_mining_thresh=0.5)
    return 'MultiBoxTarget', params, [anchors, mx.nd.array(labels), mx.nd.array(cls_pred)]


def detection_case(rng):
    anchors = multibox.MultiBoxPrior(sizes=(0.2, 0.4), ratios=(1, 2))(mx.nd.zeros((1, 1, 6, 6)))
    num_anchors = anchors.shape[1]
    cls_prob = mx.nd.softmax(mx.nd.array(rng.normal(size=(2, 4, num_anchors)) * 3), axis=1)
    loc_pred = mx.nd.array(rng.normal(size=(2, num_anchors * 4)) * 0.5)
    params = dict(nms_threshold=0.45, nms_topk=20)
    return 'MultiBoxDetection', params, [cls_prob, loc_pred, anchors]


CASES = {'prior': prior_case, 'target': target_case, 'detection': detection_case}

LOADER = textwrap.dedent('''
    import sys, json
    sys.modules['multibox'] = None  # any attempt to import the package now fails
    import mxnet as mx
    try:
        import multibox
    except ImportError:
        pass
    else:
        raise SystemExit('multibox was importable')
    prefix, inputs_file, outputs_file = sys.argv[1:]
    inputs = mx.nd.load(inputs_file)
    names = ['data%d' % i for i in range(len(inputs))] if len(inputs) > 1 else ['data']
    block = mx.gluon.SymbolBlock.imports(prefix + '-symbol.json', names, prefix + '-0000.params')
    outputs = block(*[inputs['%d' % i] for i in range(len(inputs))])
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    mx.nd.save(outputs_file, {'%d' % i: o for i, o in enumerate(outputs)})
''')


def as_list(outputs):
    return [o.asnumpy() for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]


@pytest.mark.parametrize('name', sorted(CASES))
def test_all_execution_modes_agree(name, tmp_path):
    op, params, inputs = CASES[name](np.random.RandomState(7))
    block = getattr(multibox, op)(**params)
    imperative = as_list(block(*inputs))
    native = as_list(getattr(mx.nd.contrib, op)(*inputs, **params))
    for ours, expected in zip(imperative, native):
        assert_same(ours, expected)

    block.hybridize(static_alloc=True)
    for ours, expected in zip(as_list(block(*inputs)), imperative):
        assert_same(ours, expected)

    variables = [mx.sym.var(f'in{i}') for i in range(len(inputs))]
    graph = getattr(multibox.symbol, op)(*variables, **params)
    assert '_contrib_MultiBox' not in graph.tojson()
    symbolic = graph.eval(ctx=mx.cpu(), **{f'in{i}': x for i, x in enumerate(inputs)})
    for ours, expected in zip(as_list(symbolic), imperative):
        assert_same(ours, expected)

    prefix = str(tmp_path / name)
    block.export(prefix)
    nodes = json.load(open(prefix + '-symbol.json'))['nodes']
    assert not [n for n in nodes if 'MultiBox' in n['op']]
    mx.nd.save(str(tmp_path / 'in.nd'), {str(i): x for i, x in enumerate(inputs)})
    subprocess.run([sys.executable, '-c', LOADER, prefix, str(tmp_path / 'in.nd'), str(tmp_path / 'out.nd')],
                   check=True, cwd=str(tmp_path), env={**os.environ, 'PYTHONPATH': ''})
    exported = mx.nd.load(str(tmp_path / 'out.nd'))
    for i, expected in enumerate(imperative):
        assert_same(exported[str(i)].asnumpy(), expected)
