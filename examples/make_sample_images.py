"""Regenerate demo.py's sample images, examples/images/sample_SEED.jpg, and their ground truth.

    python examples/make_sample_images.py

Each image is ``ssd.data.synthetic.draw_image(np.random.RandomState(SEED))`` (the generator of the
training set, four shape classes); the training and test sets draw from RandomState(0), so these
are images the shipped model never saw. ``ground_truth.json`` lists each image's objects as
``{"class", "box": [xmin, ymin, xmax, ymax]}`` in pixels.
"""
import argparse
import json
import os

import cv2
import numpy as np

from ssd.data.synthetic import draw_image

SEEDS = (1003, 1006, 1008, 1009)  # together they hold every class
FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'images')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--seeds', default=','.join(map(str, SEEDS)), help='comma list of seeds')
    p.add_argument('--out-dir', default=FOLDER)
    args = p.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)
    truth = {}
    for seed in (int(s) for s in args.seeds.split(',')):
        image, objects = draw_image(np.random.RandomState(seed))
        name = f'sample_{seed}.jpg'
        cv2.imwrite(os.path.join(args.out_dir, name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        truth[name] = [{'class': c, 'box': list(box)} for c, box in objects]
        print(f"{name}: {image.shape[1]}x{image.shape[0]}, {', '.join(c for c, _ in objects)}")
    lines = ',\n'.join(f' {json.dumps(name)}: {json.dumps(objects)}' for name, objects in truth.items())
    with open(os.path.join(args.out_dir, 'ground_truth.json'), 'w') as f:
        f.write('{\n' + lines + '\n}\n')


if __name__ == '__main__':
    main()
