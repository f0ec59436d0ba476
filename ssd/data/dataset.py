"""Training and validation samples: decode, augment, normalize, pad labels to a fixed width.

A sample is ``(image, label, meta)``:

* ``image`` ``(3, S, S)`` float32 RGB pixels minus the mean pixel ``255 * MEAN`` (mxnet-ssd's
  input convention; ``symbols.convert`` maps GluonCV's weights to it);
* ``label`` ``(L, 6)`` float32 rows ``[class, xmin, ymin, xmax, ymax, difficult]`` with corners
  normalized to the network input, padded with ``-1`` rows to the dataset's label width ``L``
  (MultiBoxTarget stops at the first ``-1`` row);
* ``meta`` ``(4,)`` float32 ``[index, original_width, original_height, bad_index]`` where
  ``bad_index`` is ``-1``, or the index of an image that could not be decoded and was replaced
  by the next readable one (so one bad file never stops an epoch; the caller reports it).

Augmentation is GluonCV's SSD training transform (photometric distortion, zoom-out expansion by
up to ``max_expand``, IoU-constrained random crop, random interpolation, flip), run by
:mod:`ssd.data.augment` with a faster, result-identical crop sampler. Every sample reseeds NumPy
from ``(seed, epoch, index)``, so augmentation is reproducible whichever worker process loads it.
"""
import ctypes
import os
import random

import numpy as np
from gluoncv.data.transforms import image as gimage
from mxnet import gluon, nd
from mxnet.base import _LIB

from .augment import SSDTrainAugment
from .images import read_image

__all__ = ['MEAN', 'STD', 'preprocess', 'NoReadableImages', 'FileSource', 'DetectionDataset',
           'EpochSampler', 'label_width']

MEAN = (0.485, 0.456, 0.406)
# GluonCV's transforms compute (pixels / 255 - mean) / std: std = 1/255 leaves pixels - 255 * mean
STD = (1 / 255, 1 / 255, 1 / 255)
_ATTEMPTS = 16  # consecutive unreadable images tolerated before giving up


class NoReadableImages(ValueError):
    """So many images in a row cannot be decoded that the set itself must be wrong."""


class FileSource:
    """Random access to annotation records: ``source[i] -> (image HWC uint8 RGB, label)``."""

    def __init__(self, records):
        self.records = list(records)

    def __len__(self):
        return len(self.records)

    def name(self, index):
        return self.records[index].image_path

    def object_counts(self):
        return [len(record.label) for record in self.records]

    def load(self, index):
        record = self.records[index]
        return read_image(record.image_path), record.label

    def truth(self, index, width, height):
        """Pixel label rows ``(K, 6)`` of image ``index`` as annotated (the image size is not needed)."""
        return self.records[index].label

    def image_key(self, index):
        """``(image_id, image_set)``: the dataset's own id of image ``index`` and the set it is in."""
        record = self.records[index]
        return record.image_id, record.image_set


def label_width(*sources, minimum=1):
    """Rows needed to hold the largest label: the padding width ``L`` shared by all batches."""
    return max([minimum] + [count for source in sources for count in source.object_counts()])


def preprocess(image, data_shape):
    """Network input (3, S, S) from an HWC uint8 RGB image: resize (aspect not kept), subtract the mean."""
    image = gimage.imresize(image, data_shape, data_shape, interp=1)
    return nd.image.normalize(nd.image.to_tensor(image), mean=MEAN, std=STD)


class DetectionDataset(gluon.data.Dataset):
    """Samples of ``source`` resized to ``data_shape`` (augmented if ``train``), see module doc."""

    def __init__(self, source, data_shape, width, train, seed=0, max_expand=4.0):
        self.source = source
        self.data_shape = data_shape
        self.width = width
        self.train = train
        self.seed = seed
        self._augment = SSDTrainAugment(data_shape, data_shape, mean=MEAN, std=STD, max_expand=max_expand)
        self._owner_pid = os.getpid()
        self._single_threaded = False

    def __len__(self):
        return len(self.source)

    def __getitem__(self, item):
        self._limit_worker_threads()
        item = int(item)  # samplers may hand out NumPy integers
        index, epoch = item % len(self.source), item // len(self.source)
        bad, raw_image, raw_label = -1, None, None
        for attempt in range(min(_ATTEMPTS, len(self.source))):
            position = (index + attempt) % len(self.source)
            try:
                raw_image, raw_label = self.source.load(position)
                break
            except Exception as error:  # an unreadable image must not end the epoch: take the next one
                bad, last_error = index, error
        if raw_image is None:
            raise NoReadableImages(self._unreadable_message(index, attempt + 1, last_error)) from last_error
        sample_seed = (self.seed * 1000003 + epoch * 7919 + position) % 2 ** 32
        np.random.seed(sample_seed)  # GluonCV's transforms draw from both generators
        random.seed(sample_seed)
        image, label = self._transform(raw_image, raw_label)
        meta = np.array([position, raw_image.shape[1], raw_image.shape[0], bad], dtype=np.float32)
        return image, self._pad(label), meta

    def _unreadable_message(self, index, tried, error):
        if tried == len(self.source):
            return f"none of the {tried} images of the set can be decoded (last: {error})"
        return f"{tried} consecutive images from {self.source.name(index)} on cannot be decoded (last: {error})"

    def _limit_worker_threads(self):
        """In a DataLoader worker process, run MXNet's image operators on one OpenMP thread.

        Workers handle one image at a time; with MXNet's default (one thread per core) each
        worker's spinning threads compete with the training step for the same cores.
        """
        if not self._single_threaded and os.getpid() != self._owner_pid:
            _set_omp_threads(1)
            self._single_threaded = True

    def _transform(self, image, label):
        """GluonCV transforms work on ``[xmin, ymin, xmax, ymax, class, difficult]`` pixels."""
        gluon_label = label[:, [1, 2, 3, 4, 0, 5]]
        if self.train:
            image, gluon_label = self._augment(image, gluon_label)
        else:
            height, width = image.shape[:2]
            image = preprocess(image, self.data_shape)
            gluon_label = gluon_label.copy()
            gluon_label[:, (0, 2)] *= self.data_shape / width
            gluon_label[:, (1, 3)] *= self.data_shape / height
        label = np.asarray(gluon_label, dtype=np.float32)[:, [4, 0, 1, 2, 3, 5]]
        label[:, 1:5] /= self.data_shape
        return image, label

    def _pad(self, label):
        label = label[:self.width]
        padded = -np.ones((self.width, 6), dtype=np.float32)
        padded[:len(label)] = label
        return padded


class EpochSampler(gluon.data.Sampler):
    """Indices of one epoch, shuffled (training) or in order, encoded as ``epoch * n + index``.

    The epoch rides along with the index because worker processes keep their own copy of the
    dataset: this is how ``DetectionDataset`` learns which epoch it is augmenting for.
    """

    def __init__(self, length, shuffle, seed=0, part=(0, 1)):
        self.length, self.shuffle, self.seed = length, shuffle, seed
        self.part_index, self.num_parts = part  # distributed training: worker k reads every num_parts-th image
        self.epoch = 0

    def __iter__(self):
        order = np.arange(self.length)
        if self.shuffle:
            np.random.RandomState(self.seed + self.epoch).shuffle(order)
        order = order[self.part_index::self.num_parts]
        indices = (order + self.epoch * self.length).tolist()
        self.epoch += 1
        return iter(indices)

    def __len__(self):
        return len(range(self.part_index, self.length, self.num_parts))


def _set_omp_threads(count):
    """Run this process's MXNet operators on ``count`` OpenMP threads from now on.

    MXNet 1.9.1 has no Python function for it, and ``OMP_NUM_THREADS`` is read when the OpenMP
    runtime loads, long before a DataLoader forks its workers: this calls the C API's
    MXSetNumOMPThreads.
    """
    _LIB.MXSetNumOMPThreads(ctypes.c_int(count))
