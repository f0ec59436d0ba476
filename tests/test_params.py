"""Parameter parsing: the float32 values the native ops actually use."""
import mxnet as mx
import numpy as np
import pytest

from multibox.params import as_bool, as_int, dmlc_float, float_tuple

pytestmark = pytest.mark.unit


def native_scalar_parse(value):
    """The native op writes ignore_label verbatim into cls_target for images without objects."""
    anchor = mx.nd.array([[[0, 0, .5, .5]]])
    label = -mx.nd.ones((1, 1, 5))
    _, _, cls_target = mx.nd.contrib.MultiBoxTarget(anchor, label, mx.nd.zeros((1, 2, 1)), ignore_label=value)
    return float(cls_target.asnumpy()[0, 0])


def test_dmlc_parse_matches_native_on_awkward_values():
    rng = np.random.RandomState(0)
    values = [0.5, 0.45, 0.01, -1, 3, 9.6366, 8.8e-05, 1e-3, 123.456, -0.3333333, 1.5e7, 2.5e-12]
    values += list(np.round(rng.uniform(-20, 20, 150), rng.randint(1, 7)))
    values += list(rng.uniform(0, 1, 60) * 10.0 ** rng.randint(-9, -4, 60))  # printed in scientific notation
    mismatched_float32 = 0
    for value in values:
        assert dmlc_float(value) == native_scalar_parse(value), value
        mismatched_float32 += dmlc_float(value) != float(np.float32(value))
    assert mismatched_float32 > 0  # the emulation matters: plain float32 rounding differs somewhere


def test_dmlc_parse_special_values():
    assert dmlc_float('inf') == float('inf') and dmlc_float('-inf') == float('-inf')
    assert np.isnan(dmlc_float('nan'))
    assert dmlc_float(True) == 1.0
    with pytest.raises(ValueError, match="threshold must be a number, got 'abc'"):
        dmlc_float('abc', 'threshold')


@pytest.mark.parametrize('text, expected', [
    ('(0.1,0.141)', (0.1, 0.141)), ('[1, 2, 0.5]', (1, 2, 0.5)), ('0.5', (0.5,)), ((3,), (3,)), (2, (2,)),
])
def test_tuple_parameters_accept_mxnet_ssd_strings(text, expected):
    assert float_tuple(text, 'sizes') == tuple(float(np.float32(v)) for v in expected)


def test_tuple_parameter_errors_name_the_parameter():
    with pytest.raises(ValueError, match=r'variances must have 4 values, got 3'):
        float_tuple((.1, .1, .2), 'variances', length=4)
    with pytest.raises(ValueError, match='sizes must not be empty'):
        float_tuple('()', 'sizes')
    with pytest.raises(ValueError, match='ratios must be a tuple of numbers'):
        float_tuple('(1,x)', 'ratios')


def test_bool_and_int_parameters():
    assert as_bool('True', 'clip') is True and as_bool(0, 'clip') is False
    assert as_int('400', 'nms_topk') == 400
    with pytest.raises(ValueError, match='clip must be a boolean'):
        as_bool('yes', 'clip')
    with pytest.raises(ValueError, match='nms_topk must be an integer'):
        as_int('4.5', 'nms_topk')
