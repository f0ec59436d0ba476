"""Reductions over the class axis of ``(B, C, N)`` scores without reading ``C``.

MXNet's reductions over a middle axis are slow (``max``/``argmax`` over the classes of an SSD300
batch take 8-25 ms) and a ``foreach`` over the classes misbehaves inside large ``Module``
graphs, so both MultiBoxDetection (best foreground class) and MultiBoxTarget (mining softmax)
take their class maxima from one 1-D max pooling.
"""

__all__ = ['CLASS_WINDOW', 'background_and_foreground_max']

# Pooling window over the foreground classes: C <= CLASS_WINDOW + 1
CLASS_WINDOW = 2 ** 16 + 1


def background_and_foreground_max(F, scores):
    """``(B, 2, N)``: row 0 is class 0 of ``scores (B, C, N)``, row 1 the max of classes 1..C-1.

    Layout ``NWC`` reads (B, C, N) as a batch of C positions with N features, so no transpose is
    needed; it also keeps MKLDNN out (its max pooling is far slower here and visits padded
    positions). A kernel of ``CLASS_WINDOW`` with that stride and padding ``CLASS_WINDOW - 1``
    makes window 0 cover class 0 alone and window 1 classes ``1..CLASS_WINDOW``. MXNet 1.9.1's
    CPU max pooling keeps a value iff it is ``>`` the running maximum, starting from -FLT_MAX:
    NaN never wins, and with C == 1 row 1 is -FLT_MAX.
    """
    return F.Pooling(scores, kernel=(CLASS_WINDOW,), stride=(CLASS_WINDOW,), pad=(CLASS_WINDOW - 1,),
                     pool_type='max', pooling_convention='full', layout='NWC')
