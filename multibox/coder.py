"""SSD box coding: corner boxes <-> (dx, dy, dw, dh) offsets relative to anchors.

``encode`` (used by MultiBoxTarget) and ``decode`` (used by MultiBoxDetection) are each
other's inverse up to rounding. Both reproduce the native CPU ops' float32 operation order
exactly (docs/ops-semantics.md §3.4 and §4.3), so the result matches bit for bit; every binary
operation below is a separate MXNet op, and MXNet does not fuse elementwise ops.

Box format everywhere: corner ``[xmin, ymin, xmax, ymax]``, normalized to the image.
Offsets: ``dx = ((gx - ax) / aw) / vx``, ``dy = ((gy - ay) / ah) / vy``,
``dw = log(gw / aw) / vw``, ``dh = log(gh / ah) / vh`` with centers ``x = (l + r) * 0.5``.
Unlike torchvision's BoxCoder, decode does not clamp dw/dh before ``exp``: the native op
does not, and parity wins (an overflow gives an infinite box, which ``clip`` bounds).
"""

__all__ = ['split_corners', 'encode', 'decode']


def split_corners(F, boxes):
    """Split ``(..., 4)`` corner boxes into four ``(..., 1)`` arrays ``l, t, r, b``."""
    return F.split(boxes, axis=-1, num_outputs=4)


def encode(F, anchors, boxes, variances, axis=-1):
    """Offsets of ``boxes`` relative to ``anchors``, the inverse of :func:`decode`.

    Parameters
    ----------
    anchors : (1, N, 4) or (B, N, 4) corner boxes, or (1, 4, N) / (B, 4, N) with ``axis=1``.
    boxes : (B, N, 4) corner boxes matched to each anchor, or (B, 4, N) with ``axis=1``.
    variances : 4 floats ``(vx, vy, vw, vh)`` dividing the offsets.
    axis : the axis holding the 4 coordinates; ``axis=1`` splits and concatenates contiguous
        blocks, several times cheaper than on the last axis.

    Returns
    -------
    (B, N, 4) offsets ``[dx, dy, dw, dh]``, or (B, 4, N) with ``axis=1``.
    """
    vx, vy, vw, vh = variances
    al, at, ar, ab = F.split(anchors, axis=axis, num_outputs=4)
    gl, gt, gr, gb = F.split(boxes, axis=axis, num_outputs=4)
    aw, ah = ar - al, ab - at
    ax, ay = (al + ar) * 0.5, (at + ab) * 0.5
    gw, gh = gr - gl, gb - gt
    gx, gy = (gl + gr) * 0.5, (gt + gb) * 0.5
    dx = F.broadcast_div(F.broadcast_sub(gx, ax), aw) / vx
    dy = F.broadcast_div(F.broadcast_sub(gy, ay), ah) / vy
    dw = F.log(F.broadcast_div(gw, aw)) / vw
    dh = F.log(F.broadcast_div(gh, ah)) / vh
    return F.concat(dx, dy, dw, dh, dim=axis)


def decode(F, anchors, offsets, variances, axis=-1):
    """Corner boxes from ``offsets`` relative to ``anchors``, the inverse of :func:`encode`.

    Parameters
    ----------
    anchors : (1, N, 4) corner boxes, or (1, 4, N) with ``axis=1``.
    offsets : (B, N, 4) ``[dx, dy, dw, dh]``, or (B, 4, N) with ``axis=1``.
    variances : 4 floats ``(vx, vy, vw, vh)`` multiplying the offsets.
    axis : the axis holding the 4 coordinates. With ``axis=1`` every coordinate is a contiguous
        block, which makes the split and the concatenation much cheaper than on the last axis.

    Returns
    -------
    (B, N, 4) corner boxes (or (B, 4, N) with ``axis=1``), not clipped.
    """
    vx, vy, vw, vh = variances
    al, at, ar, ab = F.split(anchors, axis=axis, num_outputs=4)
    px, py, pw, ph = F.split(offsets, axis=axis, num_outputs=4)
    aw, ah = ar - al, ab - at
    ax, ay = (al + ar) / 2, (at + ab) / 2
    ox = F.broadcast_add(F.broadcast_mul(px * vx, aw), ax)
    oy = F.broadcast_add(F.broadcast_mul(py * vy, ah), ay)
    half_w = F.broadcast_mul(F.exp(pw * vw), aw) / 2
    half_h = F.broadcast_mul(F.exp(ph * vh), ah) / 2
    return F.concat(ox - half_w, oy - half_h, ox + half_w, oy + half_h, dim=axis)
