"""MultiBoxPrior: hand-computed values, parity with the native op, errors, gradients."""
import mxnet as mx
import numpy as np
import pytest

from multibox.prior import MultiBoxPrior
from conftest import assert_same

pytestmark = pytest.mark.parity


def native_prior(data, **params):
    return mx.nd.contrib.MultiBoxPrior(data, **params).asnumpy()


# --- values computed by hand -------------------------------------------------------

def test_two_by_two_map_by_hand():
    anchors = MultiBoxPrior(sizes=(0.5,), ratios=(1.0,))(mx.nd.zeros((1, 1, 2, 2))).asnumpy()
    # centres at 0.25 / 0.75, half-size 0.25, locations in row-major order
    np.testing.assert_allclose(anchors[0], [[0, 0, .5, .5], [.5, 0, 1, .5], [0, .5, .5, 1], [.5, .5, 1, 1]])
    wide = MultiBoxPrior(sizes=(0.5,), ratios=(1.0,))(mx.nd.zeros((1, 1, 2, 3))).asnumpy()[0]
    # width 0.5 * H / W = 1/3 of the image width, centres x = 1/6, 1/2, 5/6
    np.testing.assert_allclose(wide[:3], [[0, 0, 1 / 3, .5], [1 / 3, 0, 2 / 3, .5], [2 / 3, 0, 1, .5]], atol=1e-6)


def test_anchor_order_sizes_then_ratios():
    block = MultiBoxPrior(sizes=(0.4, 0.2), ratios=(1.0, 4.0))
    anchors = block(mx.nd.zeros((1, 1, 1, 1))).asnumpy()[0]
    assert block.num_anchors == 3
    np.testing.assert_allclose(anchors, [[0.3, 0.3, 0.7, 0.7],    # size 0.4, ratio 1
                                         [0.4, 0.4, 0.6, 0.6],    # size 0.2, ratio 1
                                         [0.1, 0.4, 0.9, 0.6]],   # size 0.4, ratio 4: 0.8 x 0.2
                               atol=1e-6)


def test_mxnet_unittest_golden_values():
    # apache/mxnet tests/python/unittest/test_contrib_operator.py::test_multibox_prior_op
    data = mx.nd.zeros((1, 3, 561, 728))
    row = (250 * 728 + 250) * 5
    anchors = MultiBoxPrior(sizes=(0.75, 0.5, 0.25), ratios=(1, 2, 0.5))(data)
    assert anchors.shape == (1, 2042040, 4)
    np.testing.assert_allclose(anchors[0, row].asnumpy(), [0.055117, 0.071524, 0.63307, 0.821524],
                               atol=1e-5, rtol=1e-5)
    anchors = MultiBoxPrior(sizes=(0.75, 0.5, 0.25), ratios=(20, 2, 0.5))(data)
    np.testing.assert_allclose(anchors[0, row].asnumpy(), [-0.948249, 0.362671, 1.636436, 0.530377],
                               atol=1e-5, rtol=1e-5)


# --- parity with the native op -----------------------------------------------------

def random_prior_case(rng):
    params = dict(sizes=tuple(np.round(rng.uniform(0.02, 1.6, rng.randint(1, 5)), 4)),
                  ratios=tuple(np.round(rng.uniform(0.1, 5.0, rng.randint(1, 5)), 4)),
                  clip=bool(rng.randint(2)),
                  offsets=tuple(np.round(rng.uniform(0, 1, 2), 3)))
    if rng.rand() < 0.5:
        params['steps'] = tuple(np.round(rng.uniform(0.005, 0.3, 2), 4))
    height, width = rng.randint(1, 48), rng.randint(1, 48)
    shape = (rng.randint(1, 4), rng.randint(1, 4), height, width)
    return params, shape


@pytest.mark.parametrize('seed', range(6))
def test_random_parity_with_native(seed):
    rng = np.random.RandomState(seed)
    for _ in range(60):  # 360 cases in all
        params, shape = random_prior_case(rng)
        data = mx.nd.array(rng.uniform(size=shape))
        assert_same(MultiBoxPrior(**params)(data).asnumpy(), native_prior(data, **params))


@pytest.mark.parametrize('params, shape', [
    (dict(), (1, 1, 1, 1)),
    (dict(sizes=(0.3, 0.6), ratios=(1, 2, 0.5)), (2, 3, 7, 4)),
    (dict(sizes=(0.9,), ratios=(3,)), (1, 1, 561, 728)),
    (dict(sizes=(0.2,), steps=(0.1, 0.05)), (1, 1, 5, 3)),
    (dict(sizes=(0.2,), offsets=(0, 1)), (1, 1, 4, 6)),
    (dict(sizes=(0.2,), offsets=(0.2, 0.7)), (1, 1, 6, 4)),
    (dict(sizes=(1.5, 2.0), ratios=(1, 3), clip=True), (1, 1, 3, 5)),
    (dict(sizes=(0.2,), steps=(0, 0.1)), (1, 1, 5, 5)),  # one step <= 0: both automatic
    (dict(sizes=(0.2,), steps=(-1, -1)), (4, 2, 5, 5)),
    (dict(sizes="(0.1,0.141)", ratios="[1,2,0.5]", steps="(0.125, 0.125)"), (1, 1, 8, 8)),
])
def test_edge_cases_match_native(params, shape):
    data = mx.nd.zeros(shape)
    native_params = {k: (eval(v) if isinstance(v, str) else v) for k, v in params.items()}
    assert_same(MultiBoxPrior(**params)(data).asnumpy(), native_prior(data, **native_params))


def test_five_dimensional_input_uses_dims_2_and_3():
    data = mx.nd.zeros((2, 1, 3, 4, 5))
    assert_same(MultiBoxPrior(sizes=(0.3,))(data).asnumpy(), native_prior(data, sizes=(0.3,)))


class Network(mx.gluon.HybridBlock):
    """A prior inside a larger hybridized network always runs as graph operators."""

    def __init__(self, **params):
        super().__init__()
        self.prior = MultiBoxPrior(**params)

    def hybrid_forward(self, F, x):
        return self.prior(x)


@pytest.mark.parametrize('static_shape', [False, True])
def test_hybridized_graph_equals_native_across_shapes(static_shape):
    params = dict(sizes=(0.3, 0.5), ratios=(1, 2))
    network = Network(**params)
    network.hybridize(static_alloc=True, static_shape=static_shape)
    for hw in [(4, 4), (2, 3), (5, 5), (4, 4)]:  # a new shape must give new automatic steps
        data = mx.nd.zeros((1, 1) + hw)
        assert_same(network(data).asnumpy(), native_prior(data, **params))


def test_repeated_calls_return_independent_arrays():
    block, data = MultiBoxPrior(sizes=(0.5,)), mx.nd.zeros((1, 1, 3, 3))
    first = block(data)
    expected = first.asnumpy().copy()
    first[:] = 7  # a caller scaling its anchors in place must not change the next result
    assert_same(block(data).asnumpy(), expected)
    assert_same(block(mx.nd.zeros((2, 5, 3, 3))).asnumpy(), expected)


# --- gradients ----------------------------------------------------------------------

def test_no_gradient_reaches_data():
    data = mx.nd.ones((1, 2, 3, 3))
    data.attach_grad()
    block = MultiBoxPrior(sizes=(0.5,))
    with mx.autograd.record():
        loss = (block(data) * 2).sum() + (data * 0).sum()
    loss.backward()
    assert data.grad.abs().sum().asscalar() == 0


# --- errors ---------------------------------------------------------------------------

@pytest.mark.parametrize('params, match', [
    (dict(sizes=()), 'sizes must not be empty'),
    (dict(ratios=[]), 'ratios must not be empty'),
    (dict(sizes=(0.5, -0.1)), r'sizes must be positive, got -0\.1'),
    (dict(ratios=(0,)), 'ratios must be positive, got 0'),
    (dict(sizes='(0.1,abc)'), 'sizes must be a tuple of numbers'),
    (dict(steps=(0.1,)), 'steps must have 2 values, got 1'),
    (dict(steps=(0.1, -1)), 'steps must be both positive'),
    (dict(offsets=(0.5, 0.5, 0.5)), 'offsets must have 2 values, got 3'),
    (dict(offsets=(1.5, 0.5)), r'offsets must lie in \[0, 1\]'),
    (dict(clip='maybe'), 'clip must be a boolean'),
])
def test_bad_parameters_are_named(params, match):
    with pytest.raises(ValueError, match=match):
        MultiBoxPrior(**params)


def test_bad_inputs_are_named():
    block = MultiBoxPrior()
    with pytest.raises(ValueError, match=r'data must have at least 4 dimensions, got shape \(3, 4, 4\)'):
        block(mx.nd.zeros((3, 4, 4)))
    with pytest.raises(TypeError, match='data must be float32 like the native op, got float64'):
        block(mx.nd.zeros((1, 1, 4, 4), dtype='float64'))
    with pytest.raises(TypeError, match='data must be float32 like the native op, got float16'):
        block(mx.nd.zeros((1, 1, 4, 4), dtype='float16'))


def test_native_also_refuses_float64():
    with pytest.raises(mx.base.MXNetError, match='Unsupported data type'):
        mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 1, 2, 2), dtype='float64')).wait_to_read()
