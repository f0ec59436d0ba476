"""Draw the anchors of one SSD output layer at chosen locations over an image, save a PNG.

Example::

    python tools/visualize_anchors.py --network vgg16_reduced --data-shape 300 --layer 3 \
        --image dog.jpg --locations 2,2 --output anchors.png

The anchors are the ones the graph computes (``symbols.ssd.layer_anchors``), drawn on the image
resized to the data shape (a grey canvas without ``--image``), with the layer's cell centres.
"""
import argparse

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from symbols import get_config, network_names  # noqa: E402
from symbols.ssd import layer_anchors  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--network', default='vgg16_reduced', choices=network_names())
    parser.add_argument('--data-shape', type=int, default=300, help='square input size')
    parser.add_argument('--layer', type=int, default=3, help='output layer index, from 0')
    parser.add_argument('--image', default=None, help='image file (default: grey canvas)')
    parser.add_argument('--locations', default=None,
                        help='cells as "row,col;row,col" (default: the centre cell)')
    parser.add_argument('--output', default=None,
                        help='PNG path (default: anchors_<network>_<shape>_layer<k>.png)')
    return parser.parse_args(argv)


def load_image(path, size):
    """(size, size, 3) uint8 RGB: the image resized to ``size``, or a grey canvas."""
    if path is None:
        return np.full((size, size, 3), 200, dtype=np.uint8)
    import cv2
    image = cv2.imread(path)
    if image is None:
        raise SystemExit(f"cannot read image {path!r}")
    return cv2.cvtColor(cv2.resize(image, (size, size)), cv2.COLOR_BGR2RGB)


def parse_locations(text, rows, cols):
    """``"r,c;r,c"`` -> [(r, c), ...] within the (rows, cols) grid; default the centre cell."""
    if not text:
        return [(rows // 2, cols // 2)]
    cells = [tuple(int(v) for v in part.split(',')) for part in text.split(';') if part.strip()]
    for row, col in cells:
        if not (0 <= row < rows and 0 <= col < cols):
            raise SystemExit(f"location {row},{col} outside the {rows}x{cols} feature map")
    return cells


def anchor_labels(sizes, ratios):
    """Legend text per anchor, in ``MultiBoxPrior``'s order: every size at the first ratio,
    then the other ratios at the first size."""
    labels = [f"size {s:.3g}, ratio {ratios[0]:.3g}" for s in sizes]
    return labels + [f"size {sizes[0]:.3g}, ratio {r:.3g}" for r in ratios[1:]]


def draw(image, grid, cells, title, labels):
    """Figure with the image, the cells of ``grid`` (H, W, A, 4) and the anchors at ``cells``."""
    size = image.shape[0]
    centres = (grid[..., 0, 0::2].mean(-1) * size, grid[..., 0, 1::2].mean(-1) * size)  # x, y
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.imshow(image, extent=(0, size, size, 0))
    ax.plot(centres[0].ravel(), centres[1].ravel(), '.', color='white', markersize=2)
    colors = plt.cm.tab10(np.arange(grid.shape[2]) % 10)
    for row, col in cells:
        for a, (xmin, ymin, xmax, ymax) in enumerate(grid[row, col] * size):
            ax.add_patch(plt.Rectangle((xmin, ymin), xmax - xmin, ymax - ymin, fill=False,
                                       edgecolor=colors[a], linewidth=2,
                                       label=labels[a] if (row, col) == cells[0] else None))
        ax.plot(centres[0][row, col], centres[1][row, col], 'o', color='red', markersize=5)
    margin = 0.5 * size
    ax.set_xlim(-margin, size + margin)
    ax.set_ylim(size + margin, -margin)
    ax.set_title(title)
    ax.legend(loc='upper right', fontsize=8)
    return fig


def main(argv=None):
    args = parse_args(argv)
    config = get_config(args.network, args.data_shape)
    if not 0 <= args.layer < len(config.from_layers):
        raise SystemExit(f"--layer must be in 0..{len(config.from_layers) - 1}")
    grid = layer_anchors(config, args.data_shape)[args.layer]
    cells = parse_locations(args.locations, grid.shape[0], grid.shape[1])
    title = (f"{args.network} {args.data_shape}: layer {args.layer}, "
             f"{grid.shape[0]}x{grid.shape[1]} cells (white dots), {grid.shape[2]} anchors/cell")
    labels = anchor_labels(config.sizes[args.layer], config.ratios[args.layer])
    fig = draw(load_image(args.image, args.data_shape), grid, cells, title, labels)
    output = args.output or f"anchors_{args.network}_{args.data_shape}_layer{args.layer}.png"
    fig.savefig(output, dpi=100, bbox_inches='tight')
    print(f"saved {output}")


if __name__ == '__main__':
    main()
