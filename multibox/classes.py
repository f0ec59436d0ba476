"""Reductions over the class axis of ``(B, C, N)`` scores without reading ``C``.

MXNet's reductions over a middle axis are slow (``max``/``argmax`` over the classes of an SSD300
batch take 8-25 ms) and a ``foreach`` over the classes misbehaves inside large ``Module``
graphs, so both MultiBoxDetection (best foreground class) and MultiBoxTarget (mining softmax)
take their class maxima from one 1-D max pooling.

Not used: a 2-D ``NCHW`` pooling of the same data as a (C, N) image is twice as fast when
MXNet's own kernel runs, but oneDNN takes that layout whenever the input is not a view and then
walks the whole 65k-row padding (seconds per call); channel-last layouts keep oneDNN out.
"""

__all__ = ['CLASS_WINDOW', 'background_and_foreground_max', 'class_max']

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


def class_max(F, scores):
    """``(B, 1, N)``: the max over all classes of ``scores (B, C, N)``, same rules as above.

    One window (kernel and stride ``CLASS_WINDOW``) starting at class ``-(CLASS_WINDOW // 2)``
    covers classes ``0..CLASS_WINDOW // 2`` (MXNet requires kernel <= C + 2 * pad, hence the
    padding); a second window, all padding, is cut off. Cheaper than pooling background and
    foreground apart and then reducing the two rows.
    """
    half = CLASS_WINDOW // 2
    pooled = F.Pooling(scores, kernel=(CLASS_WINDOW,), stride=(CLASS_WINDOW,), pad=(half,),
                       pool_type='max', pooling_convention='full', layout='NWC')
    return F.slice_axis(pooled, axis=1, begin=0, end=1)
