"""A synthetic detection dataset written in Pascal VOC layout, so the real VOC reader is used.

Images of 200..320 pixels per side hold 0..4 objects of four shape classes (circle, rectangle,
triangle, cross) in random colours and sizes (10%..55% of the shorter side), on varied
backgrounds (flat colour, gradients, stripes, noise) with distracting clutter (lines, small dots).
About 5% of images contain no object at all (negatives). Everything is drawn from one seed, so
the same arguments always give the same dataset.

Layout written under ``root``::

    VOC2007/JPEGImages/000000.jpg ...
    VOC2007/Annotations/000000.xml ...
    VOC2007/ImageSets/Main/trainval.txt, test.txt
"""
import os
import shutil
import tempfile
from xml.etree import ElementTree

import cv2
import numpy as np

__all__ = ['CLASSES', 'generate', 'ensure_dataset']

CLASSES = ('circle', 'rectangle', 'triangle', 'cross')


def ensure_dataset(root, num_train=1200, num_test=300, seed=0):
    """Generate the dataset into ``root`` unless a complete copy is already there.

    The copy is built in a temporary folder beside ``root`` and renamed into place, so an
    interrupted generation never leaves a half-written dataset behind. ``root`` must be new, an
    empty folder or a copy made here: anything else (a file, a folder holding other files) is a
    ``ValueError`` naming it, and nothing of it is touched.
    """
    marker = os.path.join(root, 'VOC2007', 'ImageSets', 'Main', 'test.txt')
    if os.path.exists(marker):
        return root
    _check_free(root)
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.synthetic-', dir=parent)
    try:
        generate(staging, num_train, num_test, seed)
        if os.path.exists(marker):  # another process generated it meanwhile: keep that copy
            return root
        if os.path.isdir(root):
            try:
                os.rmdir(root)  # empty (checked above); never a folder that holds anything
            except OSError as error:
                raise ValueError(f"cannot generate the synthetic data set in {root}: files appeared in it "
                                 f"while it was generated ({error.strerror})") from error
        os.rename(staging, root)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
    return root


def _check_free(root):
    """Raise ``ValueError`` unless ``root`` is new or an empty folder below folders (not files)."""
    what = f"cannot generate the synthetic data set in {root}"
    if os.path.isdir(root):
        if os.listdir(root):
            raise ValueError(f"{what}: the folder is not empty and holds no synthetic set "
                             f"(no VOC2007/ImageSets/Main/test.txt); give a new or empty folder, or "
                             f"--dataset voc/coco/rec for a data set of your own")
        return
    if os.path.lexists(root):
        raise ValueError(f"{what}: it is a file, not a folder")
    above = os.path.dirname(os.path.abspath(root))
    while not os.path.exists(above):
        above = os.path.dirname(above)
    if not os.path.isdir(above):
        raise ValueError(f"{what}: {above} is a file, not a folder")


def generate(root, num_train, num_test, seed):
    """Write ``num_train + num_test`` images and their VOC annotations below ``root``."""
    base = os.path.join(root, 'VOC2007')
    for sub in ('JPEGImages', 'Annotations', os.path.join('ImageSets', 'Main')):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    rng = np.random.RandomState(seed)
    names = [f'{i:06d}' for i in range(num_train + num_test)]
    for name in names:
        image, objects = draw_image(rng)
        cv2.imwrite(os.path.join(base, 'JPEGImages', name + '.jpg'), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        write_annotation(os.path.join(base, 'Annotations', name + '.xml'), name, image.shape, objects)
    for split, subset in (('trainval', names[:num_train]), ('test', names[num_train:])):
        with open(os.path.join(base, 'ImageSets', 'Main', split + '.txt'), 'w') as f:
            f.write('\n'.join(subset) + '\n')


def draw_image(rng):
    """One BGR image and its objects as ``(class_name, (xmin, ymin, xmax, ymax))`` pixel boxes."""
    height, width = rng.randint(200, 321, size=2)
    image = draw_background(rng, height, width)
    draw_clutter(rng, image)
    count = 0 if rng.rand() < 0.05 else rng.randint(1, 5)
    objects = []
    for _ in range(count * 4):  # retries when a new object would hide an earlier one
        if len(objects) == count:
            break
        box = random_box(rng, height, width)
        if all(overlap(box, other) < 0.25 for _, other in objects):
            name = CLASSES[rng.randint(len(CLASSES))]
            draw_shape(image, name, box, random_colour(rng, image, box))
            objects.append((name, box))
    return image, objects


def draw_background(rng, height, width):
    kind = rng.randint(4)
    base = rng.randint(0, 256, 3).astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[:] = base
    if kind == 1:  # linear gradient towards another colour
        other = rng.randint(0, 256, 3).astype(np.float32)
        ramp = np.linspace(0, 1, width if rng.rand() < .5 else height, dtype=np.float32)
        ramp = ramp[None, :, None] if ramp.size == width else ramp[:, None, None]
        image = image * (1 - ramp) + other * ramp
    elif kind == 2:  # stripes
        period = rng.randint(8, 40)
        stripes = (np.arange(width) // period) % 2 == 0
        image[:, stripes] = rng.randint(0, 256, 3)
    noise = rng.normal(0, rng.uniform(2, 25), image.shape) if kind == 3 else rng.normal(0, 4, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def draw_clutter(rng, image):
    height, width = image.shape[:2]
    for _ in range(rng.randint(0, 6)):
        start = (int(rng.randint(width)), int(rng.randint(height)))
        end = (int(rng.randint(width)), int(rng.randint(height)))
        cv2.line(image, start, end, rng.randint(0, 256, 3).tolist(), int(rng.randint(1, 3)), cv2.LINE_AA)
    for _ in range(rng.randint(0, 10)):
        centre = (int(rng.randint(width)), int(rng.randint(height)))
        cv2.circle(image, centre, int(rng.randint(1, 4)), rng.randint(0, 256, 3).tolist(), -1, cv2.LINE_AA)


def random_box(rng, height, width):
    side = min(height, width)
    box_w, box_h = (rng.uniform(0.10, 0.55, 2) * side).astype(int) + 4
    if rng.rand() < 0.5:  # some elongated objects
        box_w = int(min(width - 2, box_w * rng.uniform(1, 1.8)))
    xmin, ymin = rng.randint(0, width - box_w), rng.randint(0, height - box_h)
    return (int(xmin), int(ymin), int(xmin + box_w), int(ymin + box_h))


def random_colour(rng, image, box):
    """A random colour that stands out from the mean colour under the box."""
    xmin, ymin, xmax, ymax = box
    under = image[ymin:ymax, xmin:xmax].reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        colour = rng.randint(0, 256, 3)
        if np.abs(colour - under).sum() > 150:
            return colour.tolist()
    return (255 - under).astype(int).tolist()


def draw_shape(image, name, box, colour):
    xmin, ymin, xmax, ymax = box
    if name == 'circle':
        ellipse = (((xmin + xmax) / 2, (ymin + ymax) / 2), (xmax - xmin - 1, ymax - ymin - 1), 0)
        cv2.ellipse(image, ellipse, colour, -1, cv2.LINE_AA)
    elif name == 'rectangle':
        cv2.rectangle(image, (xmin, ymin), (xmax - 1, ymax - 1), colour, -1)
    elif name == 'triangle':
        points = np.array([[(xmin + xmax) // 2, ymin], [xmax - 1, ymax - 1], [xmin, ymax - 1]], np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
    else:  # cross: two bars a third of the box thick
        bar_w, bar_h = max(1, (xmax - xmin) // 3), max(1, (ymax - ymin) // 3)
        cv2.rectangle(image, (xmin + bar_w, ymin), (xmax - bar_w - 1, ymax - 1), colour, -1)
        cv2.rectangle(image, (xmin, ymin + bar_h), (xmax - 1, ymax - bar_h - 1), colour, -1)


def overlap(a, b):
    """Intersection over the smaller box's area."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / smaller


def write_annotation(path, name, shape, objects):
    root = ElementTree.Element('annotation')
    ElementTree.SubElement(root, 'filename').text = name + '.jpg'
    size = ElementTree.SubElement(root, 'size')
    for tag, value in zip(('height', 'width', 'depth'), shape):
        ElementTree.SubElement(size, tag).text = str(value)
    for class_name, (xmin, ymin, xmax, ymax) in objects:
        node = ElementTree.SubElement(root, 'object')
        ElementTree.SubElement(node, 'name').text = class_name
        ElementTree.SubElement(node, 'difficult').text = '0'
        box = ElementTree.SubElement(node, 'bndbox')
        # VOC boxes are 1-based inclusive pixel indices
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (xmin + 1, ymin + 1, xmax, ymax)):
            ElementTree.SubElement(box, tag).text = str(value)
    ElementTree.ElementTree(root).write(path)
