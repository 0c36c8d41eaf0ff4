"""napari and Qt live here only.

* ``layers``: finding the user's layers and making labels for them;
* ``coordinates``: world <-> image data coordinates, the plane on screen (the edge);
* ``drawing``: the helper layers (clicks, box, outline of the object in progress);
* ``workers``: one helper for all background work (predictions, boxes, propagation, model
  loading, downloads) and the one loop that waits for it;
* ``bridge``: napari events (points added, keys, mouse) -> the annotation session;
* ``annotator``: ``Annotator``, the clicking workflow on a viewer, for the widget and scripts;
* ``layout``: the dock's narrow layout helpers; ``annotator_widget``, ``finetune_widget``,
  ``loss_plot``: the dock widgets; ``io``: the COCO reader/writer; ``sample_data``.

Nothing is imported here, so that napari can load one entry point without the others.
"""
