"""Time multibox's ops against MXNet's native contrib ops on an SSD300 workload (CPU).

Six feature maps 38, 19, 10, 5, 3, 1 with mxnet-ssd's vgg16_reduced sizes/ratios/steps
(8732 anchors), 21 classes, 1..20 ground truths per image, batch 8 and 32. Native and ours run
interleaved, each call ending in ``mx.nd.waitall()``; the script prints the median time of each
and the median of the per-round ratios ours/native.

    python benchmarks/bench_ops.py [--rounds 15] [--batches 8 32]
"""
import argparse
import statistics
import time

import mxnet as mx
import numpy as np

import multibox

MAPS = [38, 19, 10, 5, 3, 1]
SIZES = [(.1, .141), (.2, .272), (.37, .447), (.54, .619), (.71, .79), (.88, .961)]
RATIOS = [(1, 2, .5)] + [(1, 2, .5, 3, 1 / 3)] * 3 + [(1, 2, .5)] * 2
STEPS = [s / 300 for s in (8, 16, 32, 64, 100, 300)]
TARGET_PARAMS = dict(overlap_threshold=.5, ignore_label=-1, negative_mining_ratio=3,
                     negative_mining_thresh=.5, variances=(.1, .1, .2, .2))
DETECTION_PARAMS = dict(nms_threshold=.45, force_suppress=False, nms_topk=400)


def feature_maps(batch):
    return [mx.nd.zeros((batch, 8, m, m)) for m in MAPS]


def prior_params(i):
    return dict(sizes=SIZES[i], ratios=RATIOS[i], steps=(STEPS[i], STEPS[i]))


def run_native_prior(maps):
    return [mx.nd.contrib.MultiBoxPrior(m, **prior_params(i)) for i, m in enumerate(maps)]


def make_our_prior():
    blocks = [multibox.MultiBoxPrior(**prior_params(i)) for i in range(len(MAPS))]
    for block in blocks:
        block.hybridize(static_alloc=True)
    return lambda maps: [block(m) for block, m in zip(blocks, maps)]


def random_labels(rng, batch, max_objects=20):
    labels = -np.ones((batch, max_objects, 5), dtype='float32')
    for b in range(batch):
        count = rng.randint(1, max_objects + 1)
        centers = rng.uniform(0.1, 0.9, (count, 2))
        sizes = rng.uniform(0.05, 0.6, (count, 2))
        boxes = np.clip(np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1), 0, 1)
        labels[b, :count] = np.concatenate([rng.randint(0, 20, (count, 1)), boxes], axis=1)
    return mx.nd.array(labels)


def workload(batch, rng):
    anchors = mx.nd.concat(*[a.reshape((1, -1, 4)) for a in run_native_prior(feature_maps(1))], dim=1)
    num_anchors = anchors.shape[1]
    cls_pred = mx.nd.array(rng.normal(size=(batch, 21, num_anchors)))
    return dict(anchors=anchors, labels=random_labels(rng, batch), cls_pred=cls_pred,
                cls_prob=mx.nd.softmax(cls_pred, axis=1),
                loc_pred=mx.nd.array(rng.normal(scale=0.5, size=(batch, num_anchors * 4))),
                maps=feature_maps(batch))


def timed(function):
    mx.nd.waitall()
    start = time.perf_counter()
    function()
    mx.nd.waitall()
    return time.perf_counter() - start


def compare(name, native, ours, rounds):
    native(), ours()  # warm-up: shape inference, static allocation
    native_times, our_times = [], []
    for _ in range(rounds):
        native_times.append(timed(native))
        our_times.append(timed(ours))
    ratio = statistics.median(o / n for o, n in zip(our_times, native_times))
    print(f"{name:<28} native {statistics.median(native_times) * 1e3:8.2f} ms   "
          f"multibox {statistics.median(our_times) * 1e3:8.2f} ms   ratio {ratio:5.2f}x")
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rounds', type=int, default=15)
    parser.add_argument('--batches', type=int, nargs='+', default=[8, 32])
    args = parser.parse_args()
    rng = np.random.RandomState(0)
    our_prior = make_our_prior()
    target = multibox.MultiBoxTarget(**TARGET_PARAMS)
    detection = multibox.MultiBoxDetection(**DETECTION_PARAMS)
    target.hybridize(static_alloc=True)
    detection.hybridize(static_alloc=True)
    print(f"MXNet {mx.__version__}, CPU, SSD300 workload (8732 anchors, 21 classes, <=20 objects/image)")
    for batch in args.batches:
        w = workload(batch, rng)
        compare(f"MultiBoxPrior (6 maps) b{batch}", lambda: run_native_prior(w['maps']),
                lambda: our_prior(w['maps']), args.rounds)
        compare(f"MultiBoxTarget b{batch}",
                lambda: mx.nd.contrib.MultiBoxTarget(w['anchors'], w['labels'], w['cls_pred'], **TARGET_PARAMS),
                lambda: target(w['anchors'], w['labels'], w['cls_pred']), args.rounds)
        compare(f"MultiBoxDetection b{batch}",
                lambda: mx.nd.contrib.MultiBoxDetection(w['cls_prob'], w['loc_pred'], w['anchors'],
                                                        **DETECTION_PARAMS),
                lambda: detection(w['cls_prob'], w['loc_pred'], w['anchors']), args.rounds)


if __name__ == '__main__':
    main()
