"""Parsing and checking of operator parameters, done once at construction time.

The native ops receive every parameter as ``str(value)`` and parse it in C++:

* tuple parameters (sizes, ratios, steps, offsets, variances) with ``std::istream >> float``,
  which rounds correctly, i.e. to ``numpy.float32(value)``;
* scalar float parameters (thresholds, ``ignore_label``, ``negative_mining_ratio``) with
  ``dmlc::strtof``, which is *not* always correctly rounded (docs/ops-semantics.md §1).

To make the same decisions at exact boundaries (an IoU exactly at a threshold) the blocks use
the very float32 value the native op would have used; :func:`dmlc_float` reproduces that parser.
"""
import ast
import math
import re

import numpy as np

__all__ = ['float_tuple', 'dmlc_float', 'as_bool', 'as_int']

_DMLC_NUMBER = re.compile(r'\s*([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?)(\d*))?')


def _f32(value):
    return np.float32(value)


def dmlc_float(value, name='value'):
    """The float32 that ``dmlc::strtof(str(value))`` yields, as a Python float.

    The integer part is converted exactly, the fraction is ``double(digits) / double(10**k)``
    rounded to float32 and *added in float32* (double rounding), and an exponent scales by a
    float32 power of ten built from ``1e8f`` and ``10f`` factors.
    """
    if isinstance(value, bool):
        value = int(value)
    text = str(value).strip()
    lowered = text.lower().lstrip('+-')
    negative = text.startswith('-')
    if lowered in ('inf', 'infinity'):
        return -math.inf if negative else math.inf
    if lowered == 'nan':
        return math.nan
    match = _DMLC_NUMBER.fullmatch(text)
    if match is None or not (match.group(2) or match.group(3)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    sign, int_digits, frac_digits, exp_sign, exp_digits = match.groups()
    result = _f32(int(int_digits or '0'))
    if frac_digits:
        kept = frac_digits[:19]  # dmlc reads at most 19 fraction digits
        result = _f32(result + _f32(float(int(kept or '0')) / float(10 ** len(kept))))
    if exp_digits:
        exponent = min(int(exp_digits), 38)
        scale = _f32(1.0)
        while exponent >= 8:
            scale = _f32(scale * _f32(1e8))
            exponent -= 8
        while exponent > 0:
            scale = _f32(scale * _f32(10.0))
            exponent -= 1
        with np.errstate(over='ignore', divide='ignore', invalid='ignore'):
            result = _f32(result / scale) if exp_sign == '-' else _f32(result * scale)
    return float(-result if sign == '-' else result)


def float_tuple(value, name, length=None):
    """Parse a tuple parameter the way the native ops accept it.

    ``value`` may be a number, a list/tuple of numbers, or a string as mxnet-ssd passes it
    (``"(0.1,0.141)"``, ``"[1, 2]"``, ``"0.5"``). Each element is rounded to float32 like
    ``std::istream >> float``. Raises ValueError naming ``name`` when the value is empty, not
    numeric, or (if ``length`` is given) of the wrong length.
    """
    items = value
    if isinstance(value, str):
        try:
            items = ast.literal_eval(value.strip()) if value.strip() else ()
        except (ValueError, SyntaxError):
            raise ValueError(f"{name} must be a tuple of numbers, got {value!r}") from None
    if isinstance(items, (int, float, np.number)) and not isinstance(items, bool):
        items = (items,)
    try:
        parsed = tuple(float(_f32(float(v))) for v in items)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a tuple of numbers, got {value!r}") from None
    if not parsed:
        raise ValueError(f"{name} must not be empty, got {value!r}")
    if length is not None and len(parsed) != length:
        raise ValueError(f"{name} must have {length} values, got {len(parsed)}: {value!r}")
    return parsed


def as_bool(value, name):
    """Accept True/False, 0/1 and their strings, as the native bool parameters do."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ('true', '1'):
            return True
        if lowered in ('false', '0'):
            return False
        raise ValueError(f"{name} must be a boolean, got {value!r}")
    if value in (0, 1):
        return bool(value)
    raise ValueError(f"{name} must be a boolean, got {value!r}")


def as_int(value, name):
    """Accept an int or an integral string, as the native int parameters do."""
    try:
        parsed = int(str(value).strip()) if not isinstance(value, (int, np.integer)) else int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return parsed
