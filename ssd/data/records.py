"""mxnet-ssd's RecordIO detection format: ``.lst`` text lists and ``.rec``/``.idx`` packed images.

A packed label is the flat float array ``[2, W, obj_0 ..., obj_K-1]``: header width 2, object
width ``W`` (5, or 6 with the difficult flag), then ``W`` numbers per object
``[class, xmin, ymin, xmax, ymax(, difficult)]`` with coordinates normalized to [0, 1]
(PEERS.md 3.4). A ``.lst`` line is ``index \\t 2 \\t W \\t numbers... \\t relative/path.jpg``.
"""
import os

import cv2
import mxnet as mx
import numpy as np

from .images import decode

__all__ = ['pack_label', 'unpack_label', 'write_record_file', 'RecordSource']

HEADER_WIDTH = 2
OBJECT_WIDTH = 6


def pack_label(label, width, height):
    """Flat packed label from pixel rows ``(K, 6)`` ``[cls, xmin, ymin, xmax, ymax, difficult]``."""
    rows = np.array(label, dtype=np.float32).reshape(-1, OBJECT_WIDTH).copy()
    rows[:, (1, 3)] /= width
    rows[:, (2, 4)] /= height
    return np.concatenate([[HEADER_WIDTH, OBJECT_WIDTH], rows.ravel()]).astype(np.float32)


def unpack_label(packed, width, height):
    """Pixel rows ``(K, 6)`` from a packed label; width-5 objects get difficult = 0."""
    packed = np.asarray(packed, dtype=np.float32).ravel()
    if packed.size < 2 or packed[0] < 2:
        raise ValueError(f"not a packed detection label (header {packed[:2].tolist()}): "
                         f"was the record made with --pack-label?")
    header, object_width = int(packed[0]), int(packed[1])
    if object_width < 5 or (packed.size - header) % object_width:
        raise ValueError(f"packed label of {packed.size} numbers does not split into objects of "
                         f"width {object_width}")
    rows = packed[header:].reshape(-1, object_width)[:, :OBJECT_WIDTH]
    if object_width == 5:
        rows = np.concatenate([rows, np.zeros((len(rows), 1), np.float32)], axis=1)
    rows = rows.copy()
    rows[:, (1, 3)] *= width
    rows[:, (2, 4)] *= height
    return rows


def write_record_file(records, prefix, root, quality=95):
    """Write ``prefix.lst``, ``prefix.rec`` and ``prefix.idx`` from annotation records.

    Returns ``(written, problems)``; unreadable images are skipped and listed in ``problems``.
    """
    lst_tmp, rec_tmp, idx_tmp = (f'{prefix}.{ext}.tmp' for ext in ('lst', 'rec', 'idx'))
    writer = mx.recordio.MXIndexedRecordIO(idx_tmp, rec_tmp, 'w')
    written, problems = 0, []
    with open(lst_tmp, 'w') as lst:
        for record in records:
            image = cv2.imread(record.image_path)
            if image is None:
                problems.append((record.image_path, 'cannot decode image; skipped'))
                continue
            height, width = image.shape[:2]
            packed = pack_label(record.label, width, height)
            header = mx.recordio.IRHeader(0, packed, written, 0)
            writer.write_idx(written, mx.recordio.pack_img(header, image, quality=quality, img_fmt='.jpg'))
            numbers = '\t'.join(f'{v:.4f}' if i >= HEADER_WIDTH else f'{int(v)}' for i, v in enumerate(packed))
            lst.write(f'{written}\t{numbers}\t{os.path.relpath(record.image_path, root)}\n')
            written += 1
    writer.close()
    for tmp in (lst_tmp, rec_tmp, idx_tmp):  # all or nothing: rename only complete files
        os.replace(tmp, tmp[:-len('.tmp')])
    return written, problems


class RecordSource:
    """Random access to a ``.rec``/``.idx`` pair: ``source[i] -> (image HWC uint8 RGB, label)``.

    Labels come back as pixel rows ``(K, 6)``; with ``use_difficult=False`` ``load`` leaves out the
    objects flagged difficult, as ``annotations.load_voc`` does for VOC XML. Safe to use from
    DataLoader worker processes (``mx.gluon.data.RecordFileDataset`` reopens the file after a fork).
    """

    def __init__(self, rec_path, use_difficult=True):
        if not os.path.isfile(rec_path):
            raise FileNotFoundError(f"record file {rec_path} does not exist")
        idx_path = os.path.splitext(rec_path)[0] + '.idx'
        if not os.path.isfile(idx_path):
            raise FileNotFoundError(f"index file {idx_path} for {rec_path} does not exist")
        self.path = rec_path
        self.use_difficult = use_difficult  # False: objects flagged difficult are dropped by load()
        try:
            self._records = mx.gluon.data.RecordFileDataset(rec_path)
        except (ValueError, IndexError, mx.base.MXNetError) as error:  # a .idx that is not MXNet's
            raise ValueError(f"index file {idx_path} for {rec_path} is damaged ({error})") from error

    def __len__(self):
        return len(self._records)

    def name(self, index):
        return f'{self.path}#{index}'

    def object_counts(self):
        """Objects per record, from the ``.lst`` beside the ``.rec`` if there is one (fast)."""
        lst_path = os.path.splitext(self.path)[0] + '.lst'
        if os.path.isfile(lst_path):
            with open(lst_path) as f:
                return [(len(line.split('\t')) - 2 - int(line.split('\t')[1])) // int(line.split('\t')[2])
                        for line in f if line.strip()]
        return [len(unpack_label(self._unpack(i)[0].label, 1, 1)) for i in range(len(self))]

    def truth(self, index, width, height):
        """Pixel label rows ``(K, 6)`` of record ``index``, whose image is ``width`` x ``height``."""
        return unpack_label(self._unpack(index)[0].label, width, height)

    def image_key(self, index):
        """``(index, rec file name)``: a record file has no image ids of its own."""
        return index, os.path.basename(self.path)

    def _unpack(self, index):
        """``(header, encoded image)`` of record ``index``; ValueError naming the file if unreadable."""
        try:
            return mx.recordio.unpack(self._records[index])
        except mx.base.MXNetError as error:  # not a RecordIO file, or cut short
            raise ValueError(f"{self.name(index)}: cannot be read from {self.path} "
                             f"({str(error).strip().splitlines()[-1]}); a damaged file, or not a .rec of "
                             f"tools/prepare_dataset.py") from error

    def load(self, index):
        header, encoded = self._unpack(index)
        image = decode(encoded, self.name(index))
        height, width = image.shape[:2]
        label = unpack_label(header.label, width, height)
        return image, label if self.use_difficult else label[label[:, 5] <= 0]
