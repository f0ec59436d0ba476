"""evaluate.py --dataset coco on a tiny COCO-layout set drawn by the synthetic generator.

The checkpoint has random weights, so its COCO AP only shows that the pipeline runs. Whether
the conversion is right (category and image ids, [x, y, w, h] boxes, pixels of the original
image) is checked apart from any model: evaluate.py is run with the ground truth itself as its
detections, which must score AP 1, and with one box moved or relabelled, which must not.
"""
import json
import os
import re

import cv2
import numpy as np
import pytest

import evaluate
from ssd.data import annotations
from ssd.data.synthetic import CLASSES, draw_image
from ssd.inference.evaluation import coco_ap
from ssd.inference.results import coco_results
from tiny_ssd import save_checkpoint

pytestmark = pytest.mark.e2e

SPLIT = 'val2017'
# COCO's ids are not contiguous, and sorted by id these names are not in CLASSES order: a
# detection of class index k must still reach category id CATEGORY_IDS[CLASSES[k]]
CATEGORY_IDS = {'triangle': 1, 'cross': 3, 'circle': 7, 'rectangle': 9}
IMAGE_IDS = (139, 285, 632, 724, 776, 785)  # the first val2017 ids: not the loader's indices
SEEDS = (5, 7, 9, 10, 12, 15)  # 14 objects of all four classes; seed 5 draws a background-only image
AP_LINE = re.compile(r'COCO AP (\S+)  AP50 (\S+)  AP75 (\S+)')


def write_coco(root):
    """``root/val2017/<id>.jpg`` and ``root/annotations/instances_val2017.json`` as COCO ships them,
    plus one crowd region (pycocotools ignores it, load_coco skips it). Returns the json dict."""
    os.makedirs(os.path.join(root, SPLIT))
    os.makedirs(os.path.join(root, 'annotations'))
    images, objects = [], []
    for seed, image_id in zip(SEEDS, IMAGE_IDS):
        image, boxes = draw_image(np.random.RandomState(seed))
        name = f'{image_id:012d}.jpg'
        cv2.imwrite(os.path.join(root, SPLIT, name), image)
        images.append({'id': image_id, 'file_name': name, 'height': image.shape[0], 'width': image.shape[1]})
        for class_name, (xmin, ymin, xmax, ymax) in boxes:  # corners are continuous: pixels xmin..xmax-1
            objects.append({'image_id': image_id, 'category_id': CATEGORY_IDS[class_name], 'iscrowd': 0,
                            'bbox': [float(xmin), float(ymin), float(xmax - xmin), float(ymax - ymin)]})
    objects.append({'image_id': IMAGE_IDS[1], 'category_id': 1, 'iscrowd': 1, 'bbox': [0.0, 0.0, 30.0, 20.0]})
    for number, ann in enumerate(objects, 1):
        ann.update(id=number, area=ann['bbox'][2] * ann['bbox'][3])
    categories = [{'id': i, 'name': n, 'supercategory': 'shape'} for n, i in sorted(CATEGORY_IDS.items())]
    data = {'info': {'description': 'synthetic shapes'}, 'licenses': [], 'images': images,
            'annotations': objects, 'categories': categories}
    with open(os.path.join(root, 'annotations', f'instances_{SPLIT}.json'), 'w') as f:
        json.dump(data, f)
    return data


@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('coco'))
    data = write_coco(root)
    truth = [a for a in data['annotations'] if not a['iscrowd']]
    assert len(truth) == 14 and len({a['category_id'] for a in truth}) == 4  # every class is scored
    return root, data


@pytest.fixture(scope='module')
def prefix(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp('model') / 'ssd')  # random weights, CLASSES order


def run_evaluate(root, prefix, *extra):
    return evaluate.main(['--dataset', 'coco', '--data-root', root, '--val-sets', SPLIT, '--prefix', prefix,
                          '--batch-size', '4', '--num-workers', '0'] + list(extra))


def pixel_truth(data):
    """``{image_id: sorted [(class_name, [xmin, ymin, xmax, ymax])]}`` of the non-crowd objects."""
    names = {i: n for n, i in CATEGORY_IDS.items()}
    truth = {image['id']: [] for image in data['images']}
    for ann in data['annotations']:
        if not ann['iscrowd']:
            x, y, w, h = ann['bbox']
            truth[ann['image_id']].append((names[ann['category_id']], [x, y, x + w, y + h]))
    return {k: sorted(v) for k, v in truth.items()}


def test_load_coco_maps_category_ids_to_class_order_and_skips_crowds(coco):
    root, data = coco
    records, problems, names = annotations.load_coco(root, SPLIT, list(CLASSES))
    assert names == list(CLASSES) and not problems
    truth = pixel_truth(data)
    assert [r.image_id for r in records] == list(IMAGE_IDS)
    for record in records:
        assert os.path.isfile(record.image_path)
        found = sorted((CLASSES[int(row[0])], row[1:5].tolist()) for row in record.label)
        assert found == truth[record.image_id]  # crowd region absent, boxes in pixels
    assert annotations.load_coco(root, SPLIT)[2] == ['triangle', 'cross', 'circle', 'rectangle']  # by id
    with pytest.raises(ValueError, match=r"\['star'\] are not categories"):
        annotations.load_coco(root, SPLIT, ['circle', 'star'])


def test_coco_ap_of_the_ground_truth_is_1_and_drops_for_a_shifted_box(coco):
    root, data = coco
    ann_file = os.path.join(root, 'annotations', f'instances_{SPLIT}.json')
    records = [{'image': image, 'class': name, 'score': 1.0, 'box': box}
               for image, objects in pixel_truth(data).items() for name, box in objects]
    assert coco_ap(ann_file, coco_results(records, ann_file))[:3] == pytest.approx([1, 1, 1])
    xmin, ymin, xmax, ymax = records[0]['box']
    records[0]['box'] = [xmin + (xmax - xmin) / 2, ymin, xmax + (xmax - xmin) / 2, ymax]  # IoU 1/3
    assert coco_ap(ann_file, coco_results(records, ann_file))[1] < 1


def ground_truth_detector(change):
    """An ``evaluate_loader`` whose detections are each image's own annotation (score 1), the
    first object passed through ``change(row)``; the network is never run."""
    def run(detector, loader, source, evaluator, on_image):
        changed = False
        for _, _, meta in loader:
            for index, width, height, _ in meta.asnumpy():
                truth = source.truth(int(index), width, height)
                found = np.concatenate([truth[:, :1], np.ones((len(truth), 1)), truth[:, 1:5]], axis=1)
                if len(found) and not changed:
                    change(found[0])
                    changed = True
                evaluator.add(found, truth)
                on_image(int(index), found)
        return evaluator.summary(), []
    return run


def shift_half_width(row):
    row[[2, 4]] += (row[4] - row[2]) / 2  # IoU 1/3 with its ground truth


def relabel(row):
    row[0] = (row[0] + 1) % len(CLASSES)


@pytest.mark.parametrize('change, perfect', [(lambda row: None, True), (shift_half_width, False),
                                             (relabel, False)], ids=['unchanged', 'shifted', 'relabelled'])
def test_evaluate_scores_the_ground_truth_as_detections_at_coco_ap_1(coco, prefix, tmp_path, monkeypatch,
                                                                     capsys, change, perfect):
    root, data = coco
    stats = []
    monkeypatch.setattr(evaluate, 'evaluate_loader', ground_truth_detector(change))
    monkeypatch.setattr(evaluate, 'coco_ap', lambda *args: stats.append(coco_ap(*args)) or stats[-1])
    out_file = tmp_path / 'detections.json'
    assert run_evaluate(root, prefix, '--save-detections', str(out_file)) == 0
    ap, ap50, ap75 = stats[0][:3]
    assert AP_LINE.search(capsys.readouterr().out).groups() == tuple(f'{v:.4f}' for v in (ap, ap50, ap75))
    if not perfect:
        assert ap < 1 and ap50 < 1
        return
    assert (ap, ap50, ap75) == pytest.approx((1, 1, 1), abs=1e-12)
    saved = {image: [] for image in IMAGE_IDS}  # the saved boxes are the ground truth's pixels
    for d in json.load(open(out_file)):
        assert d['score'] == 1
        saved[d['image']].append((d['class'], [round(v, 2) for v in d['box']]))
    truth = pixel_truth(data)
    for image in IMAGE_IDS:
        found = sorted(saved[image])
        assert [name for name, _ in found] == [name for name, _ in truth[image]]
        np.testing.assert_allclose(np.reshape([box for _, box in found], (-1, 4)),
                                   np.reshape([box for _, box in truth[image]], (-1, 4)), atol=0.01)


def test_evaluate_coco_prints_coco_ap_and_saves_pixel_detections(coco, prefix, tmp_path, capsys):
    root, data = coco
    out_file = tmp_path / 'detections.json'
    assert run_evaluate(root, prefix, '--save-detections', str(out_file)) == 0
    printed = capsys.readouterr().out
    assert f'{len(IMAGE_IDS)} images:' in printed and 'mAP' in printed
    for value in map(float, AP_LINE.search(printed).groups()):  # random weights: any AP, or -1 (no data)
        assert np.isfinite(value) and (0 <= value <= 1 or value == -1)
    detections = json.load(open(out_file))
    assert detections and {d['class'] for d in detections} <= set(CLASSES)
    sizes = {image['id']: (image['width'], image['height']) for image in data['images']}
    for d in detections:
        width, height = sizes[d['image']]  # the COCO image id, not the loader's index
        xmin, ymin, xmax, ymax = d['box']
        assert -1e-3 <= xmin <= xmax <= width + 1e-3 and -1e-3 <= ymin <= ymax <= height + 1e-3
    assert max(max(d['box']) for d in detections) > 1.5  # pixels, not normalized coordinates


def test_evaluate_coco_rejects_several_splits_and_unknown_class_names(coco, prefix, capsys):
    root, _ = coco
    with pytest.raises(SystemExit) as error:
        evaluate.parse_args(['--dataset', 'coco', '--val-sets', 'val2017,test2017'])
    assert error.value.code == 2
    # before: evaluated every image, then a KeyError in to_coco on the first 'star' detection
    assert run_evaluate(root, prefix, '--class-names', 'circle,rectangle,triangle,star') == 2


def test_results_dir_holds_coco_results_that_pycocotools_scores_as_evaluate_did(coco, prefix, tmp_path, capsys,
                                                                                monkeypatch):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    root, data = coco
    monkeypatch.setattr(evaluate, 'evaluate_loader', ground_truth_detector(shift_half_width))  # AP in (0, 1)
    assert run_evaluate(root, prefix, '--results-dir', str(tmp_path / 'results')) == 0
    printed = AP_LINE.search(capsys.readouterr().out).groups()
    results_file = tmp_path / 'results' / f'detections_{SPLIT}_multibox_results.json'
    truth = COCO(os.path.join(root, 'annotations', f'instances_{SPLIT}.json'))
    detections = json.load(open(results_file))
    assert detections and {d['image_id'] for d in detections} <= set(IMAGE_IDS)
    assert {d['category_id'] for d in detections} <= set(CATEGORY_IDS.values())
    evaluation = COCOeval(truth, truth.loadRes(str(results_file)), 'bbox')
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert tuple(f'{v:.4f}' for v in evaluation.stats[:3]) == printed
    assert 0.5 < evaluation.stats[0] < 1
    assert (tmp_path / 'results' / 'precision_recall.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
