"""``napari-iog annotate [IMAGE]``: napari with an image and the IOG annotator docked and started.

The dock comes through napari's plugin manager (as from its Plugins menu), so this module, like
the CLI, never imports the Qt side of the package itself.
"""

from __future__ import annotations

from pathlib import Path

#: The plugin's sample images, by the name ``annotate`` accepts instead of a file.
SAMPLES = ("photo", "microscopy")


def open_annotator(image: str | None = None, model: str | None = None, device: str = "auto", show: bool = True):
    """A napari viewer showing ``image`` (a file napari reads, or a sample name: photo,
    microscopy; default: the photo) with the annotator docked and its model loading.
    Returns ``(viewer, annotator widget)``."""
    import napari  # the plugin's dock comes through napari's plugin manager, not imported here

    if image is not None and image not in SAMPLES and not Path(image).exists():
        raise FileNotFoundError(f"{image}: no such file (or give a sample: {', '.join(SAMPLES)})")
    viewer = napari.Viewer(title="napari-iog", show=show)
    try:
        if image is None or image in SAMPLES:
            viewer.open_sample("napari-iog", image or "photo")
        else:
            viewer.open(image)
        _, widget = viewer.window.add_plugin_dock_widget("napari-iog", "IOG annotator")
        if model is not None:
            widget.use_model(Path(model) if Path(model).exists() else model)
        else:
            widget.device.value = device if device in widget.device.choices else widget.device.value
            widget.start()
    except Exception:
        viewer.close()
        raise
    return viewer, widget
