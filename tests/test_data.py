"""Data side of training: synthetic VOC set, annotation problems, RecordIO, samples, checkpoints."""
import os

import mxnet as mx
import numpy as np
import pytest

from ssd import checkpoint
from ssd.data import annotations, sources, synthetic
from ssd.data.dataset import DetectionDataset, EpochSampler, FileSource, label_width
from ssd.data.records import RecordSource, pack_label, unpack_label, write_record_file

pytestmark = pytest.mark.e2e

CLASSES = list(synthetic.CLASSES)


@pytest.fixture(scope='module')
def voc_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('voc') / 'synthetic')
    synthetic.ensure_dataset(root, num_train=24, num_test=8, seed=3)
    return root


def test_synthetic_set_is_a_complete_voc_layout(voc_root):
    records, problems = annotations.load_voc(voc_root, ['2007_trainval'], CLASSES)
    assert problems == [] and len(records) == 24
    test_records, _ = annotations.load_voc(voc_root, ['2007_test'], CLASSES)
    assert len(test_records) == 8
    labels = np.concatenate([r.label for r in records])
    assert set(labels[:, 0].astype(int)) <= set(range(4)) and (labels[:, 3] > labels[:, 1]).all()
    assert all(os.path.isfile(r.image_path) for r in records)


def test_synthetic_generation_is_deterministic(tmp_path):
    first, second = str(tmp_path / 'a'), str(tmp_path / 'b')
    synthetic.ensure_dataset(first, 5, 2, seed=9)
    synthetic.ensure_dataset(second, 5, 2, seed=9)
    a, _ = annotations.load_voc(first, ['2007_trainval'], CLASSES)
    b, _ = annotations.load_voc(second, ['2007_trainval'], CLASSES)
    assert all(np.array_equal(x.label, y.label) for x, y in zip(a, b))


def write_voc(root, image_id, objects, size=(100, 80)):
    """A one-image VOC set; ``objects`` are (name, xmin, ymin, xmax, ymax) in VOC's 1-based pixels."""
    base = os.path.join(root, 'VOC2007')
    for sub in ('Annotations', 'JPEGImages', 'ImageSets/Main'):
        os.makedirs(os.path.join(base, sub), exist_ok=True)
    xml = [f'<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>']
    for name, *box in objects:
        coords = ''.join(f'<{t}>{v}</{t}>' for t, v in zip(('xmin', 'ymin', 'xmax', 'ymax'), box))
        xml.append(f'<object><name>{name}</name><difficult>0</difficult><bndbox>{coords}</bndbox></object>')
    with open(os.path.join(base, 'Annotations', image_id + '.xml'), 'w') as f:
        f.write(''.join(xml) + '</annotation>')
    import cv2
    cv2.imwrite(os.path.join(base, 'JPEGImages', image_id + '.jpg'), np.zeros((size[1], size[0], 3), np.uint8))
    with open(os.path.join(base, 'ImageSets/Main/trainval.txt'), 'a') as f:
        f.write(image_id + '\n')


def test_annotation_problems_are_reported_and_skipped(tmp_path):
    root = str(tmp_path)
    write_voc(root, 'good', [('circle', 11, 21, 51, 61)])
    write_voc(root, 'mixed', [('circle', 1, 1, 10, 10), ('dragon', 1, 1, 10, 10),
                              ('cross', 30, 10, 20, 40), ('triangle', 50, 50, 500, 60)])
    write_voc(root, 'broken', [])
    with open(os.path.join(root, 'VOC2007', 'Annotations', 'broken.xml'), 'w') as f:
        f.write('<annotation><size>')
    records, problems = annotations.load_voc(root, ['2007_trainval'], CLASSES)
    assert [(r.image_id, r.image_set) for r in records] == [('good', '2007_trainval'), ('mixed', '2007_trainval')]
    np.testing.assert_array_equal(records[0].label, [[0, 10, 20, 50, 60, 0]])  # 0-based corners
    np.testing.assert_array_equal(records[1].label, [[0, 0, 0, 9, 9, 0]])
    messages = '\n'.join(f'{os.path.basename(p.path)}: {p.message}' for p in problems)
    assert "mixed.xml: unknown class 'dragon'" in messages
    assert "mixed.xml: object 'cross' has xmin >= xmax" in messages
    assert "mixed.xml: object 'triangle' box" in messages and 'outside the 100x80 image' in messages
    assert 'broken.xml: unreadable annotation' in messages


def write_xml(root, image_id, xml):
    """Replace the annotation of ``image_id`` (made by ``write_voc``) with ``xml``."""
    with open(os.path.join(root, 'VOC2007', 'Annotations', image_id + '.xml'), 'w') as f:
        f.write(xml)


def test_misannotated_sizes_difficult_flags_and_images_are_reported_by_file(tmp_path):
    root = str(tmp_path)
    box = '<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>'
    for image_id, xml in [
            ('flag', f'<annotation><size><width>100</width><height>80</height></size><object><name>circle</name>'
                     f'<difficult>yes</difficult>{box}</object><object><name>cross</name>{box}</object></annotation>'),
            ('nosize', f'<annotation><object><name>circle</name>{box}</object></annotation>'),
            ('zero', f'<annotation><size><width>0</width><height>80</height></size>'
                     f'<object><name>circle</name>{box}</object></annotation>'),
            ('allbroken', '<annotation><size><width>100</width><height>80</height></size><object><name>circle'
                          '</name><bndbox><xmin>50</xmin><ymin>1</ymin><xmax>500</xmax><ymax>9</ymax></bndbox>'
                          '</object></annotation>'),
            ('empty', '<annotation><size><width>100</width><height>80</height></size></annotation>')]:
        write_voc(root, image_id, [])
        write_xml(root, image_id, xml)
    records, problems = annotations.load_voc(root, ['2007_trainval'], CLASSES)
    messages = '\n'.join(f'{os.path.basename(p.path)}: {p.message}' for p in problems)
    # before: int('yes') ended the whole run with "invalid literal for int()", no file named
    assert "flag.xml: object 'circle' has <difficult> 'yes', not 0 or 1; object skipped" in messages
    assert "nosize.xml: unreadable annotation (no <size><width>); image skipped" in messages
    assert "zero.xml: unreadable annotation (<size><width> '0' is not a positive size); image skipped" in messages
    # an image whose objects are all misannotated is not an image without objects
    assert 'allbroken.xml: no valid object left; image skipped rather than used as a negative' in messages
    assert [(r.image_id, len(r.label)) for r in records] == [('flag', 1), ('empty', 0)]  # a true negative stays


def test_synthetic_generation_never_touches_a_folder_it_did_not_make(tmp_path):
    # before: a --data-root without the synthetic set (the default --dataset) was generated into
    # and then deleted with shutil.rmtree, whatever it held
    precious = tmp_path / 'thesis'
    precious.mkdir()
    (precious / 'chapter1.tex').write_text('years of work')
    with pytest.raises(ValueError, match=rf'cannot generate the synthetic data set in {precious}: the folder is '
                                         rf'not empty and holds no synthetic set'):
        synthetic.ensure_dataset(str(precious), 2, 1)
    assert os.listdir(precious) == ['chapter1.tex'] and (precious / 'chapter1.tex').read_text() == 'years of work'
    a_file = tmp_path / 'file'
    a_file.write_text('x')
    for root, reason in [(a_file, 'it is a file, not a folder'), (a_file / 'sub', f'{a_file} is a file, not a folder')]:
        with pytest.raises(ValueError, match=f'cannot generate the synthetic data set in {root}: {reason}'):
            synthetic.ensure_dataset(str(root), 2, 1)
    assert a_file.read_text() == 'x'
    (tmp_path / 'empty').mkdir()  # an empty folder, or a new one, is generated into
    for root in (tmp_path / 'empty', tmp_path / 'new' / 'deeper'):
        synthetic.ensure_dataset(str(root), 2, 1)
        assert os.listdir(root) == ['VOC2007']
    assert sorted(os.listdir(tmp_path)) == ['empty', 'file', 'new', 'thesis']  # no staging folder left


def test_damaged_coco_annotations_and_a_wrong_class_count_are_named(tmp_path):
    folder = tmp_path / 'annotations'
    folder.mkdir()
    (folder / 'instances_val2017.json').write_text('{"images": [')
    with pytest.raises(ValueError, match=rf"COCO split 'val2017': {folder / 'instances_val2017.json'} is damaged "
                                         r"\(Expecting value"):
        annotations.load_coco(str(tmp_path), 'val2017')
    (folder / 'instances_val2017.json').write_text('[1, 2]')
    with pytest.raises(ValueError, match=r'is not a COCO annotation file \(no images, annotations, categories\)'):
        annotations.load_coco(str(tmp_path), 'val2017')
    write_voc(str(tmp_path), 'a', [('circle', 11, 21, 51, 61)])
    spec = sources.DataSpec('voc', str(tmp_path), ['2007_trainval'], None, CLASSES, 3, use_difficult=False)
    # before: evaluate.py ignored a --num-class that did not fit (train.py alone checked it)
    with pytest.raises(ValueError, match=r"--num-class 3 does not match the 4 class names \['circle'"):
        sources.open_split(spec)


def test_missing_image_set_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'VOC image set .2012_trainval.*trainval\.txt does not exist'):
        annotations.load_voc(str(tmp_path), ['2012_trainval'], CLASSES)
    # before: "VOC2007/ImageSets/Main/.txt does not exist"
    with pytest.raises(ValueError, match="VOC image set '2007': expected YEAR_SPLIT, such as 2007_test"):
        annotations.load_voc(str(tmp_path), ['2007'], CLASSES)


def test_a_damaged_record_file_is_named(tmp_path):
    # before: MXNet's "Invalid RecordIO File" traceback from label_width, exit 1
    (tmp_path / 'g.rec').write_bytes(b'garbage record data')
    (tmp_path / 'g.idx').write_text('0\t0\n')
    source = RecordSource(str(tmp_path / 'g.rec'))
    with pytest.raises(ValueError, match=rf'{tmp_path / "g.rec"}#0: cannot be read from {tmp_path / "g.rec"} '
                                         r'\(MXNetError: .*Invalid RecordIO File\); a damaged file'):
        source.object_counts()
    (tmp_path / 'g.idx').write_text('zz\n')
    with pytest.raises(ValueError, match=f'index file {tmp_path / "g.idx"} for {tmp_path / "g.rec"} is damaged'):
        RecordSource(str(tmp_path / 'g.rec'))


def test_class_names_from_string_or_file(tmp_path):
    assert annotations.read_class_names('cat, dog') == ['cat', 'dog']
    path = tmp_path / 'names.txt'
    path.write_text('cat\n\ndog\n')
    assert annotations.read_class_names(str(path)) == ['cat', 'dog']
    with pytest.raises(ValueError, match='duplicates'):
        annotations.read_class_names('cat,cat')
    # before: a mistyped file name became the one class, every annotated object "unknown"
    with pytest.raises(FileNotFoundError, match=f'--class-names {tmp_path / "nmes.txt"}: no such file'):
        annotations.read_class_names(str(tmp_path / 'nmes.txt'))
    with pytest.raises(ValueError, match=f'--class-names {tmp_path} is a folder'):
        annotations.read_class_names(str(tmp_path))
    (tmp_path / 'binary.txt').write_bytes(b'cat\n\xff\xfe\n')
    with pytest.raises(ValueError, match=f'--class-names {tmp_path / "binary.txt"}: cannot be read as a text file'):
        annotations.read_class_names(str(tmp_path / 'binary.txt'))
    with pytest.raises(ValueError, match="--class-names gave no class names: ',,'"):
        annotations.read_class_names(',,')


def test_record_file_round_trip(voc_root, tmp_path):
    records, _ = annotations.load_voc(voc_root, ['2007_trainval'], CLASSES)
    written, problems = write_record_file(records, str(tmp_path / 'train'), voc_root)
    assert written == len(records) and problems == []
    source = RecordSource(str(tmp_path / 'train.rec'))
    assert source.object_counts() == [len(r.label) for r in records]
    for index in (0, 5, 17):
        image, label = source.load(index)
        np.testing.assert_allclose(label, records[index].label, atol=1e-3)
        assert image.shape[2] == 3


def test_record_file_drops_difficult_objects_for_training_as_voc_xml_does(voc_root, tmp_path):
    records, _ = annotations.load_voc(voc_root, ['2007_trainval'], CLASSES)
    flagged = [r._replace(label=r.label.copy()) for r in records[:3]]
    for record in flagged:
        record.label[0, 5] = 1  # the first object of each image marked difficult
    assert write_record_file(flagged, str(tmp_path / 'train'), voc_root)[0] == 3
    every, trainable = (RecordSource(str(tmp_path / 'train.rec'), use_difficult=flag) for flag in (True, False))
    for index, record in enumerate(flagged):
        np.testing.assert_allclose(every.load(index)[1], record.label, atol=1e-3)
        np.testing.assert_allclose(trainable.load(index)[1], record.label[1:], atol=1e-3)
    train_spec = sources.DataSpec('rec', None, [], str(tmp_path / 'train.rec'), CLASSES, None, use_difficult=False)
    assert sources.open_split(train_spec).source.use_difficult is False  # train.py's --no-use-difficult (default)


def test_packed_label_format_is_mxnet_ssds():
    packed = pack_label([[2, 10, 20, 30, 40, 1]], width=100, height=200)
    np.testing.assert_allclose(packed, [2, 6, 2, .1, .1, .3, .2, 1], rtol=1e-6)
    np.testing.assert_allclose(unpack_label([2, 5, 1, .5, .5, 1, 1], 10, 20), [[1, 5, 10, 10, 20, 0]])
    with pytest.raises(ValueError, match='was the record made with --pack-label'):
        unpack_label([7.0], 10, 10)


def test_samples_are_normalized_padded_and_reproducible(voc_root):
    records, _ = annotations.load_voc(voc_root, ['2007_trainval'], CLASSES)
    source = FileSource(records)
    width = label_width(source)
    dataset = DetectionDataset(source, 96, width + 2, train=True, seed=1)
    image, label, meta = dataset[3]
    again, label_again, _ = dataset[3]
    assert image.shape == (3, 96, 96) and label.shape == (width + 2, 6)
    np.testing.assert_array_equal(image.asnumpy(), again.asnumpy())  # same seed, epoch, index
    np.testing.assert_array_equal(label, label_again)
    boxes = label[label[:, 0] >= 0]
    assert ((boxes[:, 1:5] >= 0) & (boxes[:, 1:5] <= 1)).all()
    assert (label[len(boxes):] == -1).all()
    assert meta[0] == 3 and meta[3] == -1
    other_epoch, _, _ = dataset[3 + len(dataset)]
    assert not np.array_equal(other_epoch.asnumpy(), image.asnumpy())


def test_validation_sample_is_the_resized_image(voc_root):
    records, _ = annotations.load_voc(voc_root, ['2007_test'], CLASSES)
    dataset = DetectionDataset(FileSource(records), 64, 8, train=False)
    _, label, meta = dataset[0]
    truth = records[0].label
    np.testing.assert_allclose(label[:len(truth), 1:5], truth[:, 1:5] / [meta[1], meta[2], meta[1], meta[2]],
                               rtol=1e-5)


def test_unreadable_image_is_replaced_and_reported(voc_root, tmp_path):
    records, _ = annotations.load_voc(voc_root, ['2007_trainval'], CLASSES)
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not a jpeg')
    records[2] = records[2]._replace(image_path=str(broken))
    dataset = DetectionDataset(FileSource(records), 64, 8, train=True)
    image, _, meta = dataset[2]
    assert image.shape == (3, 64, 64)
    assert meta[0] == 3 and meta[3] == 2  # image 3 stood in for unreadable image 2


def test_epoch_sampler_shards_and_advances():
    sampler = EpochSampler(10, shuffle=True, seed=0, part=(1, 3))
    first, second = list(sampler), list(sampler)
    assert len(first) == len(second) == len(sampler) == 3
    assert all(0 <= i < 10 for i in first) and all(10 <= i < 20 for i in second)  # epoch rides along
    shards = [list(EpochSampler(10, True, 0, (part, 3))) for part in range(3)]
    assert sorted(i for shard in shards for i in shard) == list(range(10))  # disjoint and complete
    assert list(EpochSampler(4, shuffle=False)) == [0, 1, 2, 3]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = str(tmp_path / 'model-0001.params')
    checkpoint.atomic_write(path, lambda p: mx.nd.save(p, {'arg:w': mx.nd.ones(2)}))

    def crash(temporary):
        with open(temporary, 'wb') as f:
            f.write(b'half')
        raise OSError('disk full')

    with pytest.raises(OSError, match='disk full'):
        checkpoint.atomic_write(path, crash)
    assert mx.nd.load(path)['arg:w'].asnumpy().tolist() == [1, 1]
    assert os.listdir(tmp_path) == ['model-0001.params']  # no temporary file left behind
