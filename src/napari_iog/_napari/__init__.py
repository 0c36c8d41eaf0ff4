"""napari and Qt live here only.

* ``layers``: finding the user's layers and making labels for them;
* ``coordinates``: world <-> image data coordinates, the plane on screen (the edge);
* ``drawing``: the helper layers (clicks, box, outline of the object in progress);
* ``workers``: one helper for all background work (predictions, boxes, propagation, model
  loading, downloads) and the one loop that waits for it;
* ``bridge``: napari events (points added, keys, mouse) -> the annotation session;
* ``tasks``: drawn boxes and propagation, here or in a worker;
* ``annotator``: ``Annotator``, the clicking workflow on a viewer, for the widget and scripts;
* ``layout``: the docks' narrow layout helpers; ``model_choice``: the models offered and their
  download; ``annotator_widget``, ``finetune_widget``, ``loss_plot``, ``training_process``: the
  dock widgets and the training subprocess; ``io``: the COCO reader/writer; ``sample_data``.

Nothing is imported here, so that napari can load one entry point without the others.
"""
