"""Decode image files for training, validation and demo.py, refusing truncated or corrupt ones.

OpenCV (which ``mx.image`` decodes with) fills a truncated JPEG or PNG with grey and returns it
as a valid image, and a file it cannot decode at all fails only later, when MXNet's engine runs
the decode. So every image is checked twice: Pillow reads the encoded stream to its end first
(a JPEG decoded at 1/8 scale, which still consumes every byte of its scans; a PNG's chunks and
checksums verified; other formats decoded), then OpenCV's result is waited for. A file failing
either check raises ``UnreadableImage`` naming it and saying why.

The pixels are OpenCV's (``mx.image.imdecode(..., flag=1)``: 3 channels RGB, grey repeated,
alpha dropped, 16-bit scaled to 8), the same whether the bytes come from a file or a record.
"""
import io
import os

import mxnet as mx
from PIL import Image, ImageFile, UnidentifiedImageError

__all__ = ['EXTENSIONS', 'UnreadableImage', 'check_encoded', 'decode', 'folder_images', 'read_image']

#: The file name endings taken as images when a folder is given (demo.py, deploy.py --int8)
EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm', '.pbm')


class UnreadableImage(ValueError):
    """An image that cannot be decoded; the message starts with its name."""


def folder_images(folder, skip_suffix=None):
    """The image files of ``folder`` (by ``EXTENSIONS``), sorted; names ending in ``skip_suffix`` left out."""
    return sorted(os.path.join(folder, name) for name in os.listdir(folder)
                  if name.lower().endswith(EXTENSIONS) and not (skip_suffix and name.endswith(skip_suffix)))


def read_image(path):
    """HWC uint8 RGB NDArray of the image file ``path`` (``decode`` of its bytes)."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as error:
        raise UnreadableImage(f"{path}: cannot be read ({error.strerror or error})") from error
    return decode(data, path)


def decode(data, name):
    """HWC uint8 RGB NDArray of the encoded image ``data``; ``name`` is used in the error message."""
    check_encoded(data, name)
    try:
        image = mx.image.imdecode(data, flag=1)
        image.wait_to_read()  # MXNet decodes asynchronously: a failure would surface at first use
    except mx.base.MXNetError as error:
        raise UnreadableImage(f"{name}: cannot be decoded by OpenCV "
                              f"({str(error).strip().splitlines()[-1]})") from error
    return image


def check_encoded(data, name):
    """Raise ``UnreadableImage`` unless Pillow reads ``data`` to its end without an error."""
    # GluonCV sets Pillow's global LOAD_TRUNCATED_IMAGES on import (gluoncv.data.mhp), which
    # makes Pillow pad a truncated file silently; it is cleared for this check only
    tolerant, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == 'JPEG':
                # libjpeg's DCT scaling: 1/64 of the pixels to produce, every byte still read
                image.draft(None, (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
            elif image.format == 'PNG':
                image.verify()  # chunk lengths and CRCs to IEND: truncation and damage, no inflating
            else:
                image.load()
    except UnidentifiedImageError as error:
        raise UnreadableImage(f"{name}: not an image (unknown format)") from error
    except (OSError, SyntaxError, ValueError) as error:  # Pillow's decoders raise all three
        raise UnreadableImage(f"{name}: truncated or corrupt image ({error})") from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = tolerant
