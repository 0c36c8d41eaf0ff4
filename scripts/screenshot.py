"""Take the README's picture of the annotator: the widget docked beside an image, one
committed object and one in progress. Runs napari under a (virtual) display:

    xvfb-run -a python3 scripts/screenshot.py --model IOG_PASCAL_SBD.pth --out docs/images/annotator.png

Without --model it uses the default model shipped in the package when there is one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication
from skimage import data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint path (default: the packaged default model)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="docs/images/annotator.png")
    args = parser.parse_args()

    from napari_iog import IOGPredictor

    predictor = IOGPredictor(args.model, device=args.device)
    viewer = napari.Viewer(title="napari-iog")
    viewer.window.resize(1280, 800)      # a laptop-sized window: the dock must leave room for the canvas
    viewer.add_image(data.astronaut(), name="astronaut")
    _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
    widget.start(predictor)
    ann = widget.annotator
    # Corners as a user clicks them: tight around the object (IOG takes them as its box).
    ann.segment(corners=((12, 150), (215, 322)), inside=(130, 240))       # the astronaut's head
    ann.commit()
    ann.segment(corners=((290, 278), (511, 511)), inside=(400, 400))      # the helmet, in progress
    ann.correct((300, 300), positive=False)
    ann.labels_layer.opacity = 0.6
    viewer.layers.selection.active = ann.clicks_layer
    for _ in range(20):
        QApplication.processEvents()
    viewer.reset_view()
    QApplication.processEvents()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    image = viewer.screenshot(str(out), canvas_only=False, flash=False)
    print(f"wrote {out} ({image.shape[1]}x{image.shape[0]}); model {predictor.arch}, "
          f"labels {np.unique(ann.labels_layer.data).tolist()}")
    viewer.close()


if __name__ == "__main__":
    main()
