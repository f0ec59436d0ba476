"""Helpers of the demo and deploy tests: a small random-weight SSD checkpoint, sample images."""
import cv2
import mxnet as mx
import numpy as np

import symbols
from ssd import checkpoint
from ssd.data.synthetic import CLASSES, draw_image

NETWORK, SHAPE = 'mobilenet0.25', 128


def save_checkpoint(prefix, epoch=1, seed=0, class_names=CLASSES):
    """``PREFIX-symbol.json``, ``PREFIX-%04d.params`` and its JSON sidecar, as train.py writes them,
    holding Xavier-initialised weights of the inference graph (mobilenet0.25 at 128 pixels)."""
    mx.random.seed(seed)
    symbol = symbols.get_symbol(NETWORK, len(class_names), SHAPE)
    module = mx.mod.Module(symbol, data_names=['data'], label_names=None)
    module.bind([('data', (1, 3, SHAPE, SHAPE))], for_training=False)
    # He initialisation ('in'): with 'out', MobileNet's depthwise layers shrink activations to ~1e-14
    module.init_params(mx.init.Xavier(rnd_type='gaussian', factor_type='in', magnitude=2))
    arg, aux = module.get_params()
    checkpoint.save(str(prefix), epoch, symbol, arg, aux,
                    extra={'epoch': epoch, 'network': NETWORK, 'data_shape': SHAPE, 'class_names': list(class_names)})
    return str(prefix)


def write_image(path, seed):
    """A synthetic shapes image (BGR from ``draw_image``) saved at ``path``; returns (width, height)."""
    image, _ = draw_image(np.random.RandomState(seed))
    cv2.imwrite(str(path), image)
    return image.shape[1], image.shape[0]
