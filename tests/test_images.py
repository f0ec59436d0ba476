"""ssd.data.images: truncated, header-only and mislabelled images are refused by name, good ones decode as
OpenCV (``mx.image.imread``) decodes them, and a dataset skips and counts what it cannot decode."""
import io

import mxnet as mx
import numpy as np
import pytest
from PIL import Image, ImageFile

from ssd.data import images
from ssd.data.annotations import Record
from ssd.data.dataset import DetectionDataset, FileSource, NoReadableImages
from tiny_ssd import write_image

pytestmark = pytest.mark.unit


@pytest.fixture
def files(tmp_path):
    """Good JPEG and PNG files and the broken variants the issue lists, by name."""
    write_image(tmp_path / 'good.jpg', seed=4)
    write_image(tmp_path / 'good.png', seed=5)
    jpeg, png = (tmp_path / 'good.jpg').read_bytes(), (tmp_path / 'good.png').read_bytes()
    broken = {'truncated.jpg': jpeg[:len(jpeg) // 2],
              'header_only.jpg': jpeg[:jpeg.index(b'\xff\xda')],  # everything before the first scan
              'truncated.png': png[:len(png) // 2],
              'png_named.jpg': png[:len(png) // 2],
              'text.jpg': b'not an image'}
    for name, data in broken.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize('name, reason', [
    ('truncated.jpg', 'truncated or corrupt image (image file is truncated'),
    ('header_only.jpg', 'truncated or corrupt image (cannot load this image)'),
    ('truncated.png', 'truncated or corrupt image (Truncated File Read)'),
    ('png_named.jpg', 'truncated or corrupt image (Truncated File Read)'),
    ('text.jpg', 'not an image (unknown format)'),
    ('missing.jpg', 'cannot be read (No such file or directory)'),
])
def test_broken_images_are_refused_by_name(files, name, reason):
    with pytest.raises(images.UnreadableImage) as error:
        images.read_image(str(files / name))
    assert str(error.value).startswith(f"{files / name}: {reason}")


def test_opencv_would_have_returned_a_grey_filled_image(files):
    # why the Pillow check exists: OpenCV decodes the truncated JPEG without an error
    assert mx.image.imread(str(files / 'truncated.jpg')).asnumpy().shape[2] == 3


def test_gluoncvs_tolerant_pillow_setting_does_not_hide_truncation(files, monkeypatch):
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)  # what importing gluoncv does
    with pytest.raises(images.UnreadableImage, match='image file is truncated'):
        images.read_image(str(files / 'truncated.jpg'))
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_an_undecodable_image_that_pillow_accepts_is_caught_from_opencv(files):
    gif = io.BytesIO()
    Image.new('RGB', (8, 8)).save(gif, format='GIF')  # Pillow reads it, OpenCV has no GIF decoder
    with pytest.raises(images.UnreadableImage, match=r'^x\.gif: cannot be decoded by OpenCV'):
        images.decode(gif.getvalue(), 'x.gif')


@pytest.mark.parametrize('name', ['good.jpg', 'good.png'])
def test_good_images_decode_exactly_as_opencv(files, name):
    np.testing.assert_array_equal(images.read_image(str(files / name)).asnumpy(),
                                  mx.image.imread(str(files / name), flag=1).asnumpy())


def source(files, names):
    return FileSource([Record(str(files / name), np.zeros((0, 6), np.float32), name) for name in names])


def test_dataset_replaces_and_reports_an_undecodable_image(files):
    dataset = DetectionDataset(source(files, ['good.jpg', 'truncated.png', 'good.png']), 64, 1, train=False)
    metas = [dataset[i][2] for i in range(3)]
    assert [m[3] for m in metas] == [-1, 1, -1]  # sample 1 stands in for image 1, which could not be decoded
    assert metas[1][0] == 2  # ... with the next readable one


def test_a_set_without_any_decodable_image_is_a_clear_error(files):
    dataset = DetectionDataset(source(files, ['truncated.jpg', 'png_named.jpg', 'header_only.jpg']), 64, 1,
                               train=False)
    with pytest.raises(NoReadableImages, match=r'^none of the 3 images of the set can be decoded \(last: .*'
                                               r'header_only\.jpg: truncated or corrupt image'):
        dataset[0]
