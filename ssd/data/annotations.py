"""Read detection annotations (Pascal VOC XML, COCO json) into one record format.

A record is ``(image_path, label, image_id, image_set)`` with ``label`` a float32 array ``(K, 6)`` of rows
``[class_id, xmin, ymin, xmax, ymax, difficult]`` in pixels of the original image (0-based,
like GluonCV: VOC's 1-based corners minus 1), ``image_id`` the dataset's own id (VOC's ImageSets
id such as ``'000600'``, COCO's integer id) and ``image_set`` what it was read from (``'2007_test'``,
``'val2017'``). ``K`` may be 0: background-only images are kept
as negatives.

Nothing here raises on bad data: a broken annotation file, an unknown class name, a box outside
its image or with ``xmin >= xmax`` is recorded as a ``Problem`` naming the file, and the object
(or, for an unreadable file, the image) is skipped. Callers report the problems.
"""
import json
import os
from collections import namedtuple
from xml.etree import ElementTree

import numpy as np

__all__ = ['Problem', 'load_voc', 'load_coco', 'read_class_names']

Problem = namedtuple('Problem', 'path message')
Record = namedtuple('Record', 'image_path label image_id image_set', defaults=(None, None))


def read_class_names(value):
    """Class names from a comma-separated string or from a file with one name per line."""
    if value is None:
        return None
    if os.path.isfile(value):
        try:
            with open(value, encoding='utf-8') as f:
                names = [line.strip() for line in f if line.strip()]
        except (OSError, UnicodeDecodeError) as error:
            raise ValueError(f"--class-names {value}: cannot be read as a text file ({error})") from error
    elif os.path.isdir(value):
        raise ValueError(f"--class-names {value} is a folder, not a file of class names")
    elif '/' in value or os.sep in value or value.lower().endswith(('.txt', '.names', '.csv')):
        # a file name, not a class: as a one-class list every annotated object would be "unknown"
        raise FileNotFoundError(f"--class-names {value}: no such file (a comma list of names, or a file with "
                                f"one name per line)")
    else:
        names = [name.strip() for name in value.split(',') if name.strip()]
    if not names:
        raise ValueError(f"--class-names gave no class names: {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"--class-names has duplicates: {names}")
    return names


def load_voc(root, sets, class_names, use_difficult=True):
    """Records of the VOC image sets ``sets`` (e.g. ``['2007_trainval', '2012_trainval']``).

    ``root`` is the VOCdevkit folder holding ``VOC2007/`` etc. Objects whose class is not in
    ``class_names`` are skipped and reported (that is also how a class subset is trained).
    Returns ``(records, problems)``.
    """
    records, problems = [], []
    for image_set in sets:
        year, _, split = image_set.partition('_')
        if not (year and split):
            raise ValueError(f"VOC image set {image_set!r}: expected YEAR_SPLIT, such as 2007_test or 2012_trainval")
        base = os.path.join(root, f'VOC{year}')
        list_file = os.path.join(base, 'ImageSets', 'Main', f'{split}.txt')
        if not os.path.isfile(list_file):
            raise FileNotFoundError(f"VOC image set {image_set!r}: {list_file} does not exist "
                                    f"(--data-root should be the VOCdevkit folder)")
        with open(list_file) as f:
            ids = [line.strip().split()[0] for line in f if line.strip()]
        for image_id in ids:
            xml_path = os.path.join(base, 'Annotations', image_id + '.xml')
            label = _voc_label(xml_path, class_names, use_difficult, problems)
            if label is not None:
                records.append(Record(os.path.join(base, 'JPEGImages', image_id + '.jpg'), label,
                                      image_id, image_set))
    return records, problems


def _voc_label(xml_path, class_names, use_difficult, problems):
    try:
        tree = ElementTree.parse(xml_path).getroot()
        width, height = (_size(tree, tag) for tag in ('width', 'height'))
    except (OSError, ElementTree.ParseError, ValueError) as error:
        problems.append(Problem(xml_path, f'unreadable annotation ({error}); image skipped'))
        return None
    rows, broken = [], 0
    for obj in tree.iter('object'):
        name = (obj.findtext('name') or '').strip()
        try:
            difficult = int(float(obj.findtext('difficult') or 0))
        except ValueError:
            problems.append(Problem(xml_path, f"object {name!r} has <difficult> {obj.findtext('difficult')!r}, "
                                              f"not 0 or 1; object skipped"))
            broken += 1
            continue
        if difficult and not use_difficult:
            continue
        if name not in class_names:
            problems.append(Problem(xml_path, f'unknown class {name!r}; object skipped'))
            continue
        try:
            box = [float(obj.find('bndbox/' + tag).text) - 1 for tag in ('xmin', 'ymin', 'xmax', 'ymax')]
        except (AttributeError, TypeError, ValueError):
            problems.append(Problem(xml_path, f'object {name!r} has no valid bndbox; object skipped'))
            broken += 1
            continue
        if _box_problem(box, width, height, xml_path, name, problems):
            broken += 1
            continue
        rows.append([class_names.index(name)] + box + [difficult])
    if broken and not rows:  # its objects are there, only misannotated: not an image without objects
        problems.append(Problem(xml_path, 'no valid object left; image skipped rather than used as a negative'))
        return None
    return np.array(rows, dtype=np.float32).reshape(-1, 6)


def _size(tree, tag):
    """``<size><tag>`` of a VOC annotation as a positive number; ValueError saying what is wrong."""
    text = tree.findtext(f'size/{tag}')
    if text is None:
        raise ValueError(f'no <size><{tag}>')
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f'<size><{tag}> {text!r} is not a number') from None
    if not 0 < value < float('inf'):
        raise ValueError(f'<size><{tag}> {text!r} is not a positive size')
    return value


def _box_problem(box, width, height, path, name, problems):
    """Record and return True if ``box`` is degenerate or lies outside the image."""
    xmin, ymin, xmax, ymax = box
    if not (xmin < xmax and ymin < ymax):
        problems.append(Problem(path, f'object {name!r} has xmin >= xmax or ymin >= ymax {box}; skipped'))
        return True
    # VOC corners may touch the last pixel (index width - 1); allow a pixel of slack
    if xmin < -1 or ymin < -1 or xmax > width or ymax > height:
        problems.append(Problem(path, f'object {name!r} box {box} is outside the {width:g}x{height:g} image; skipped'))
        return True
    return False


def load_coco(root, split, class_names=None):
    """Records of COCO ``split`` (e.g. ``'train2017'``) from ``root/annotations/instances_{split}.json``.

    Class ids follow the order of ``class_names`` (default: COCO's category order). Crowd
    annotations are skipped, as in mxnet-ssd and GluonCV. Returns ``(records, problems, names)``.
    Raises ValueError if a name in ``class_names`` is not a category of the json file (such a
    class could never be trained, nor its detections scored by pycocotools).
    """
    ann_file = os.path.join(root, 'annotations', f'instances_{split}.json')
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"COCO split {split!r}: {ann_file} does not exist "
                                f"(--data-root should be the COCO root)")
    try:
        with open(ann_file, encoding='utf-8') as f:
            data = json.load(f)
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"COCO split {split!r}: {ann_file} is damaged ({error})") from error
    keys = ('images', 'annotations', 'categories')
    missing = [key for key in keys if key not in data] if isinstance(data, dict) else list(keys)
    if missing:
        raise ValueError(f"COCO split {split!r}: {ann_file} is not a COCO annotation file (no "
                         f"{', '.join(missing)})")
    categories = {c['id']: c['name'] for c in data['categories']}
    unknown = [name for name in class_names or [] if name not in categories.values()]
    if unknown:
        raise ValueError(f"class names {unknown} are not categories of {ann_file}: "
                         f"{sorted(categories.values())}")
    names = class_names or [categories[k] for k in sorted(categories)]
    objects = {}
    for ann in data['annotations']:
        objects.setdefault(ann['image_id'], []).append(ann)
    records, problems = [], []
    for image in data['images']:
        path = os.path.join(root, split, image['file_name'])
        rows = []
        for ann in objects.get(image['id'], []):
            name = categories.get(ann['category_id'])
            if ann.get('iscrowd', 0):
                continue
            if name not in names:
                problems.append(Problem(path, f'unknown class {name!r}; object skipped'))
                continue
            x, y, w, h = ann['bbox']
            box = [x, y, x + w, y + h]
            if _box_problem(box, image['width'], image['height'], path, name, problems):
                continue
            rows.append([names.index(name)] + box + [0])
        records.append(Record(path, np.array(rows, dtype=np.float32).reshape(-1, 6), image['id'], split))
    return records, problems, names
