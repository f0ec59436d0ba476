"""Build SSD300's 8732 anchors with multibox and run the three ops on random predictions.

    python examples/quickstart.py
"""
import mxnet as mx
import numpy as np

import multibox

# mxnet-ssd's vgg16_reduced at 300x300: six feature maps and their anchor shapes
MAPS = [38, 19, 10, 5, 3, 1]
SIZES = [(.1, .141), (.2, .272), (.37, .447), (.54, .619), (.71, .79), (.88, .961)]
RATIOS = [(1, 2, .5)] + [(1, 2, .5, 3, 1 / 3)] * 3 + [(1, 2, .5)] * 2
STEPS = [s / 300 for s in (8, 16, 32, 64, 100, 300)]
CLASSES = ['cat', 'dog']


def main():
    rng = np.random.RandomState(0)
    anchors = mx.nd.concat(*[
        multibox.MultiBoxPrior(sizes=SIZES[i], ratios=RATIOS[i], steps=(STEPS[i], STEPS[i]))(
            mx.nd.zeros((1, 512, size, size)))
        for i, size in enumerate(MAPS)], dim=1)
    num_anchors = anchors.shape[1]
    print(f"anchors: {anchors.shape} (corner format, normalized)")

    # one image, two objects: [class, xmin, ymin, xmax, ymax], padded with -1 rows
    label = mx.nd.array([[[0, .10, .20, .45, .70], [1, .50, .40, .95, .90], [-1, -1, -1, -1, -1]]])
    cls_pred = mx.nd.array(rng.normal(size=(1, len(CLASSES) + 1, num_anchors)))
    loc_target, loc_mask, cls_target = multibox.MultiBoxTarget(negative_mining_ratio=3)(anchors, label, cls_pred)
    cls = cls_target.asnumpy()[0]
    print(f"targets: {int((cls > 0).sum())} positive anchors, {int((cls == 0).sum())} mined negatives, "
          f"{int((cls == -1).sum())} ignored; loc_target {loc_target.shape}, mask sum {int(loc_mask.sum().asscalar())}")

    # pretend the network predicted exactly the targets: detection must recover the two boxes
    logits = mx.nd.one_hot(mx.nd.array(np.maximum(cls, 0)), len(CLASSES) + 1).T.expand_dims(0) * 10
    detections = multibox.MultiBoxDetection(nms_threshold=0.45, nms_topk=400)(
        mx.nd.softmax(logits, axis=1), loc_target, anchors)[0].asnumpy()
    for class_id, score, *box in detections[detections[:, 0] >= 0][:5]:
        print(f"detection: {CLASSES[int(class_id)]:<4} score {score:.3f} box {[round(float(v), 3) for v in box]}")


if __name__ == '__main__':
    main()
