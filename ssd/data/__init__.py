"""Detection data: annotation readers, image decoding, augmentation, the dataset and its sources
(VOC/COCO folders, RecordIO, synthetic shapes). The bottom layer: imports nothing else of ``ssd``
(``tests/test_layering.py``)."""
