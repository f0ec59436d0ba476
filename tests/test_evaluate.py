"""evaluate.py on a VOC-layout set: devkit result files, dataset image ids, the plot, model checks.

The shipped model (mobilenet0.25, 256 px, the synthetic shapes) is evaluated on images the
synthetic generator draws with a seed of its own, so its AP is neither 0 nor 1 and a file
that re-scores to the same AP says something.
"""
import json
import os
import re
import shutil

import cv2
import numpy as np
import pytest

import evaluate
from ssd.data import annotations, synthetic
from ssd.options import SHIPPED_EPOCH
from test_evaluation import devkit_ap

pytestmark = pytest.mark.e2e

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AP_ROW = re.compile(r'^(\w+)\s+(\d\.\d{4}|nan)$', re.M)


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('voc') / 'synthetic')
    synthetic.ensure_dataset(root, num_train=2, num_test=24, seed=11)
    return root


@pytest.fixture(scope='module')
def shipped(shipped_copy):
    return ['--prefix', shipped_copy, '--epoch', str(SHIPPED_EPOCH)]


def run(voc_root, shipped, *extra):
    return evaluate.main(['--data-root', voc_root, '--batch-size', '8', '--num-workers', '0'] + shipped + list(extra))


def printed_ap(text):
    return {name: float(value) for name, value in AP_ROW.findall(text)}


def read_comp4(folder, class_names):
    """Detections of the devkit's comp4 files as 0-based pixel rows per image id."""
    found = {}
    for class_id, name in enumerate(class_names):
        with open(os.path.join(folder, f'comp4_det_test_{name}.txt')) as f:
            for line in f:
                image, score, *box = line.split()
                found.setdefault(image, []).append([class_id, float(score)] + [float(v) - 1 for v in box])
    return found


@pytest.mark.parametrize('voc07', [True, False])
def test_voc_result_files_rescored_by_the_devkit_rules_give_evaluates_ap(voc_root, shipped, tmp_path, capsys, voc07):
    results = tmp_path / 'results'
    assert run(voc_root, shipped, '--results-dir', str(results), *([] if voc07 else ['--no-voc07'])) == 0
    ap = printed_ap(capsys.readouterr().out)
    assert 0.2 < ap['mAP'] < 1
    records, _ = annotations.load_voc(voc_root, ['2007_test'], list(synthetic.CLASSES))
    found = read_comp4(results, synthetic.CLASSES)
    assert set(found) <= {r.image_id for r in records} and '000002' in found  # ImageSets ids, no year
    detections = [np.array(found.get(r.image_id, []), float).reshape(-1, 6) for r in records]
    truths = [r.label for r in records]  # pixels as read from the XML
    for class_id, name in enumerate(synthetic.CLASSES):
        assert ap[name] == pytest.approx(devkit_ap(detections, truths, class_id, 0.5, voc07), abs=5e-5)
    assert (results / 'precision_recall.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_saved_detections_carry_the_image_set_id_and_pixel_boxes(voc_root, shipped, tmp_path, capsys):
    out = tmp_path / 'detections.json'
    assert run(voc_root, shipped, '--save-detections', str(out), '--pr-plot', str(tmp_path / 'pr.png')) == 0
    records = json.load(open(out))
    sizes = {r.image_id: r for r in annotations.load_voc(voc_root, ['2007_test'], list(synthetic.CLASSES))[0]}
    assert {r['image'] for r in records} <= set(sizes) and {r['set'] for r in records} == {'2007_test'}
    assert max(max(r['box']) for r in records) > 1.5  # pixels, not [0, 1]
    assert os.path.isfile(tmp_path / 'pr.png')
    assert f"saved {len(records)} detections" in capsys.readouterr().out


def test_a_class_list_that_does_not_fit_the_weights_exits_2_naming_the_parameter(voc_root, shipped, caplog):
    # before: an uncaught MXNetError "Incompatible attr ... expected [30], got [18]"
    assert run(voc_root, shipped, '--class-names', 'circle,cross') == 2
    assert 'does not fit this graph with 2 classes' in caplog.text
    assert 'relu10_cls_pred_conv_weight (20, 64, 3, 3) != (12, 64, 3, 3)' in caplog.text


def test_training_validation_scores_as_evaluate_does(voc_root, shipped_copy, tmp_path, capsys):
    """The mAP train.py records for an epoch is evaluate.py's mAP of that checkpoint (same scorer):
    one tiny step from the shipped weights, so the AP is far from 0."""
    import train
    prefix, next_epoch = str(tmp_path / 'ssd'), SHIPPED_EPOCH + 1
    for suffix in ('.params', '.json'):
        shutil.copy(f'{shipped_copy}-{SHIPPED_EPOCH:04d}{suffix}', f'{prefix}-{SHIPPED_EPOCH:04d}{suffix}')
    assert train.main(['--data-root', voc_root, '--prefix', prefix, '--batch-size', '2', '--num-workers', '0',
                       '--frequent', '0', '--finetune', str(SHIPPED_EPOCH), '--end-epoch', str(next_epoch),
                       '--lr', '1e-7']) == 0
    recorded = json.load(open(f'{prefix}-{next_epoch:04d}.json'))['val_mAP']
    assert 0.2 < recorded < 1
    capsys.readouterr()
    assert evaluate.main(['--data-root', voc_root, '--prefix', prefix, '--epoch', str(next_epoch), '--num-workers', '0']) == 0
    assert printed_ap(capsys.readouterr().out)['mAP'] == pytest.approx(recorded, abs=5e-5)


def test_undecodable_images_are_skipped_counted_and_not_scored(voc_root, shipped, tmp_path, capsys, caplog):
    root = tmp_path / 'copy'
    shutil.copytree(voc_root, root)
    images = root / 'VOC2007' / 'JPEGImages'
    names = (root / 'VOC2007' / 'ImageSets' / 'Main' / 'test.txt').read_text().split()
    png = cv2.imencode('.png', cv2.imread(str(images / f'{names[0]}.jpg')))[1].tobytes()
    (images / f'{names[0]}.jpg').write_bytes(png[:len(png) // 2])  # a truncated PNG named .jpg
    jpeg = (images / f'{names[1]}.jpg').read_bytes()
    (images / f'{names[1]}.jpg').write_bytes(jpeg[:len(jpeg) // 2])  # OpenCV alone fills it with grey
    saved = tmp_path / 'd.json'
    assert evaluate.main(['--data-root', str(root), '--batch-size', '8', '--num-workers', '0', '--save-detections',
                          str(saved)] + shipped) == 0
    for name in names[:2]:
        assert f"skipped unreadable image {images / name}.jpg (its objects are not scored)" in caplog.text
    assert f"in pixels, {len(names) - 2} images:" in capsys.readouterr().out
    assert not {names[0], names[1]} & {r['image'] for r in json.load(open(saved))}


def test_a_validation_set_without_any_decodable_image_exits_2(voc_root, shipped, tmp_path, caplog):
    root = tmp_path / 'copy'
    shutil.copytree(voc_root, root)
    for path in (root / 'VOC2007' / 'JPEGImages').iterdir():
        path.write_bytes(path.read_bytes()[:300])
    assert evaluate.main(['--data-root', str(root), '--num-workers', '0'] + shipped) == 2
    first = root / 'VOC2007' / 'JPEGImages' / f"{(root / 'VOC2007/ImageSets/Main/test.txt').read_text().split()[0]}.jpg"
    # more images than the 16 tried in a row: the message names where the run of failures starts
    assert f'16 consecutive images from {first} on cannot be decoded (last: ' in caplog.text
