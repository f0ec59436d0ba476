"""Detection result files in the formats the official scorers read, and a precision-recall plot.

* ``detection_records``: evaluate.py's ``--save-detections`` JSON, one record per detection
  ``{"image", "set", "class", "score", "box"}``, ``image`` the dataset's own id (VOC's ImageSets
  id ``'000600'``, COCO's integer ``image_id``), ``box`` ``[xmin, ymin, xmax, ymax]`` in pixels
  of the original image (0-based, as the annotation readers give the ground truth).
* ``write_voc_results``: the VOC devkit's ``comp4_det_<split>_<class>.txt`` files, one line per
  detection ``image_id score xmin ymin xmax ymax`` with the devkit's 1-based pixel corners.
* ``coco_results``: COCO's results format ``{"image_id", "category_id", "bbox": [x, y, w, h],
  "score"}``, which ``pycocotools.coco.COCO.loadRes`` reads.
"""
import json
import os

from ssd import checkpoint

__all__ = ['detection_records', 'write_voc_results', 'coco_results', 'write_json', 'plot_precision_recall']


def detection_records(source, index, detections, class_names):
    """Records of image ``index`` of ``source`` from its (K, 6) pixel detection rows."""
    image_id, image_set = source.image_key(index)
    return [{'image': image_id, 'set': image_set, 'class': class_names[int(row[0])], 'score': float(row[1]),
             'box': [float(v) for v in row[2:6]]} for row in detections]


def write_voc_results(records, folder, class_names):
    """``folder/comp4_det_<split>_<class>.txt`` for every class and split of ``records``; returns the paths.

    ``<split>`` is the image set without its year (``test`` for ``2007_test``), as in the devkit.
    Numbers keep 9 significant digits, so re-scoring the files reproduces the scores' order.
    """
    splits = sorted({str(r['set']).rpartition('_')[2] for r in records}) or ['test']
    paths = []
    for split in splits:
        for name in class_names:
            lines = [f"{r['image']} {r['score']:.9g} " + ' '.join(f'{v + 1:.9g}' for v in r['box'])
                     for r in records if r['class'] == name and str(r['set']).rpartition('_')[2] == split]
            path = os.path.join(folder, f'comp4_det_{split}_{name}.txt')
            checkpoint.atomic_write(path, lambda p, text=''.join(line + '\n' for line in lines): _write_text(p, text))
            paths.append(path)
    return paths


def coco_results(records, annotation_file):
    """COCO results (``[x, y, w, h]`` boxes) of ``records``; category ids looked up by name in the
    annotation file, since COCO's ids are neither contiguous nor in our class order."""
    with open(annotation_file) as f:
        categories = {c['name']: c['id'] for c in json.load(f)['categories']}
    return [{'image_id': r['image'], 'category_id': categories[r['class']], 'score': r['score'],
             'bbox': [r['box'][0], r['box'][1], r['box'][2] - r['box'][0], r['box'][3] - r['box'][1]]}
            for r in records]


def write_json(path, value):
    """``value`` as JSON at ``path``, written atomically."""
    checkpoint.atomic_write(path, lambda p: _write_text(p, json.dumps(value)))


def _write_text(path, text):
    with open(path, 'w') as f:
        f.write(text)


def plot_precision_recall(curves, summary, path, title):
    """A PNG of each class's precision-recall curve (``VOCEvaluator.curves()``), AP in the legend."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ap = dict(summary)
    figure, axes = plt.subplots(figsize=(6.4, 4.8))
    for name, (recall, precision) in curves.items():
        axes.plot(recall, precision, label=f'{name} (AP {ap[name]:.3f})')
    axes.set(xlim=(0, 1), ylim=(0, 1.02), xlabel='recall', ylabel='precision', title=title)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(loc='lower left', fontsize='small')
    figure.tight_layout()
    checkpoint.atomic_write(path, lambda p: figure.savefig(p, format='png'))
    plt.close(figure)
