"""The annotator's helper layers and how the session is drawn on them.

* ``IOG clicks`` (points): where the user clicks. Each point's role (corner, inside,
  positive, negative, extreme) is a feature and sets its colour;
* ``IOG box`` (shapes, read-only): the box once two corners are set, and while the corners
  are being placed, a vertical and a horizontal guide line that follow the cursor;
* ``IOG current object`` (labels): the prediction drawn as a yellow outline (committed objects
  are filled), a layer only as large as the crop the network saw, placed over the image.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.colormaps import DirectLabelColormap

from ..session import ROLES, AnnotationSession
from .coordinates import Coordinates
from .layers import BOX_LAYER_NAME, HELPER_KEY, PREVIEW_LAYER_NAME, transform_of

ROLE_COLOURS = {"corner": "yellow", "inside": "lime", "positive": "cyan", "negative": "magenta",
                "extreme": "orange"}
ROLE_SYMBOLS = {"corner": "square", "inside": "disc", "positive": "disc", "negative": "x",
                "extreme": "diamond"}
CLICKS_LAYER_NAME = "IOG clicks"
IN_PROGRESS_COLOUR = "yellow"  # the box and the outline of the object not yet committed
PREVIEW_CONTOUR = 2            # px: the current object is drawn as an outline this thick


def role_table(roles) -> pd.DataFrame:
    return pd.DataFrame({"role": pd.Categorical(list(roles), categories=ROLES)})


class HelperLayers:
    """The three helper layers over ``image_layer``; :meth:`draw` shows a session on them."""

    def __init__(self, viewer, image_layer: Image, coordinates: Coordinates, first_role: str):
        self.viewer, self.image_layer, self.coordinates = viewer, image_layer, coordinates
        ndim = image_layer.ndim
        self.clicks = Points(ndim=ndim, name=CLICKS_LAYER_NAME, features=role_table([]), face_color="role",
                             face_color_cycle=ROLE_COLOURS, border_color="black", size=10,
                             **transform_of(image_layer))
        self.clicks.feature_defaults = {"role": first_role}
        self.box = Shapes(ndim=ndim, name=BOX_LAYER_NAME, edge_color=IN_PROGRESS_COLOUR, face_color="transparent",
                          edge_width=2, **transform_of(image_layer))
        self.box.locked = True    # read-only: it shows the clicks, it is not edited
        # An outline in the box's colour, never a fill: committed objects are filled, in whatever
        # colours the labels layer's colormap gives them, so the two cannot be mistaken.
        self.preview = Labels(np.zeros((1,) * ndim, np.uint8), name=PREVIEW_LAYER_NAME, opacity=1.0,
                              scale=image_layer.scale, visible=False,
                              colormap=DirectLabelColormap(color_dict={None: "transparent", 1: IN_PROGRESS_COLOUR}))
        self.preview.contour = PREVIEW_CONTOUR
        for layer in (self.preview, self.box, self.clicks):
            layer.metadata[HELPER_KEY] = True
            viewer.add_layer(layer)
        viewer.layers.selection.active = self.clicks
        self.clicks.mode = "add"
        self._drawn_box: tuple | None = None          # what the box layer shows now
        self._drawn_prediction = None                 # the prediction the outline shows now

    def remove(self) -> None:
        for layer in (self.clicks, self.box, self.preview):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def draw(self, session: AnnotationSession, negative: bool, guide: tuple[float, float] | None) -> None:
        self._draw_clicks(session, negative)
        self.draw_box(session, guide)
        self.draw_preview(session)

    def _draw_clicks(self, s: AnnotationSession, negative: bool) -> None:
        # Only what differs is set: after a click napari has already added the point itself,
        # and setting a layer's data again cost tens of ms of the main thread per click.
        layer = self.clicks
        coords = np.array([self.coordinates.to_layer(layer, (*s.plane, *p)) for _, p in s.clicks],
                          dtype=float).reshape(-1, layer.ndim)
        roles = [r for r, _ in s.clicks]
        shown_roles = [str(r) for r in layer.features["role"]] if len(layer.data) else []
        if coords.shape != np.shape(layer.data) or not np.allclose(coords, layer.data):
            layer.data = coords
            shown_roles = None
        if roles != shown_roles:            # e.g. a Shift+click napari added as the default role
            layer.features = role_table(roles)
            layer.refresh_colors(update_color_mapping=False)
        symbols = [ROLE_SYMBOLS[r] for r in roles]
        if roles and [str(v) for v in np.atleast_1d(layer.symbol)] != [str(v) for v in symbols]:
            layer.symbol = symbols
        role = s.next_role(negative)
        if str(layer.feature_defaults["role"].iloc[0]) != role:
            layer.feature_defaults = {"role": role}

    def draw_box(self, s: AnnotationSession, guide: tuple[float, float] | None) -> None:
        """The box (or the extreme points' box), and the guide lines while a corner is placed."""
        layer, to_layer = self.box, self.coordinates.to_layer
        shapes, types = [], []
        if s.mode == "iog":
            corners = s.points("corner")
        else:
            extreme = s.points("extreme")
            corners = ([(min(p[0] for p in extreme), min(p[1] for p in extreme)),
                        (max(p[0] for p in extreme), max(p[1] for p in extreme))] if len(extreme) == 4 else [])
        plane = s.plane if s.clicks else self.coordinates.current_plane_or_none()
        if len(corners) == 2:
            (r0, r1), (c0, c1) = sorted((corners[0][0], corners[1][0])), sorted((corners[0][1], corners[1][1]))
            rect = [(r0 - 0.5, c0 - 0.5), (r0 - 0.5, c1 + 0.5), (r1 + 0.5, c1 + 0.5), (r1 + 0.5, c0 - 0.5)]
            shapes.append([to_layer(layer, (*plane, *v)) for v in rect])
            types.append("rectangle")
        if guide is not None and s.next_role() == "corner" and plane is not None:
            h, w = self.coordinates.spatial_shape[-2:]
            r, c = guide
            for a, b in (((r, -0.5), (r, w - 0.5)), ((-0.5, c), (h - 0.5, c))):
                shapes.append([to_layer(layer, (*plane, *a)), to_layer(layer, (*plane, *b))])
                types.append("line")
        drawn = (tuple(types), tuple(tuple(map(tuple, np.round(np.asarray(sh), 3))) for sh in shapes))
        if drawn == self._drawn_box:        # unchanged (every inside or correction click): nothing to do
            return
        self._drawn_box = drawn
        with layer.events.blocker_all():
            layer.data = []
        if shapes:
            layer.add([np.asarray(sh) for sh in shapes], shape_type=types)
        layer.refresh()

    def draw_preview(self, s: AnnotationSession) -> None:
        """The current prediction's outline (hidden when there is none)."""
        layer, current = self.preview, s.current
        if current is None:
            layer.visible = False
            self._drawn_prediction = None
            return
        if current is self._drawn_prediction and layer.visible:
            return                          # a redraw after a click: the result for it is still to come
        self._drawn_prediction = current
        window, mask = current.window, current.window_mask()
        offset = np.array([*s.plane, window.r0, window.c0], dtype=float)
        translate = np.asarray(self.image_layer.translate) + np.asarray(self.image_layer.scale) * offset
        if not np.array_equal(layer.scale, self.image_layer.scale):
            layer.scale = self.image_layer.scale
        if not np.array_equal(layer.translate, translate):
            layer.translate = translate
        layer.data = mask.astype(np.uint8).reshape((1,) * len(s.plane) + mask.shape)
        layer.visible = True
