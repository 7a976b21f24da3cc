"""How strongly a reconstruction paints the "dotted" pattern onto a plain background.

At low rates an MSE-trained codec that cannot afford to tell "plain" from
"dotted" apart draws the average of both: a faint dot grid on a plain
background (issue 7). :func:`dot_grid_contrast` measures it on a tiny-world
scene whose pattern is plain: the mean colour of the reconstruction where the
dotted pattern would put its dots, against the mean colour of the background
away from them, in 8-bit levels (0 for a clean background; the dotted pattern
itself is tens of levels)::

    >>> from itc_core.tinyworld import generate_scene, render
    >>> seed = next(s for s in range(100) if generate_scene(s).pattern == "plain")
    >>> dot_grid_contrast(render(generate_scene(seed), seed=seed), generate_scene(seed), seed)
    0.0
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from PIL import Image
from scipy import ndimage

from .scenes import COLOURS, Scene, pattern_colour, render

__all__ = ["dot_grid_contrast", "dot_grid_colour_cosine"]


def _masks(scene: Scene, size: int, seed: int, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(dot pixels, background pixels more than 2 px (Chebyshev) from any pixel the dots touch: the corners of
    each lattice cell), both away from objects; the dot lattice moved ``shift`` px to the right."""
    empty = replace(scene, objects=())
    plain = np.asarray(render(replace(empty, pattern="plain"), size), np.float32)
    dotted = np.asarray(render(replace(empty, pattern="dotted"), size), np.float32)
    change = np.roll(np.abs(dotted - plain).max(-1), shift, axis=1)
    dots = change > 0.25 * change.max()
    near = _dilate(change > 0, 2)
    drawn = np.asarray(render(scene, size, seed=seed), np.float32)
    background = ~_dilate(np.abs(drawn - plain).max(-1) > 0, 2)  # away from objects (and their antialiasing)
    return dots & background, ~near & background


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` grown by ``radius`` pixels in every direction (a square structuring element)."""
    return ndimage.binary_dilation(mask, structure=np.ones((2 * radius + 1, 2 * radius + 1), bool))


def dot_grid_contrast(image: Image.Image, scene: Scene, seed: int = 0, shift: int = 0) -> float:
    """RMS over RGB of (mean colour on the dot grid − mean colour of the background between dots), in 8-bit
    levels, for ``image`` (e.g. a reconstruction) of ``scene``, a scene with a plain background, rendered
    with ``seed`` (:func:`~itc_core.tinyworld.sample` renders scene ``s`` with seed ``s``).

    ``shift`` = 4 moves the lattice half a period sideways, onto places where no pattern puts dots: the
    figure then measures how uneven the background is anyway (the control to compare with).
    """
    diff = _grid_difference(image, scene, seed, shift)
    return float(np.sqrt((diff ** 2).mean()))


def dot_grid_colour_cosine(image: Image.Image, scene: Scene, seed: int = 0) -> float:
    """Cosine between the grid's colour difference (as in :func:`dot_grid_contrast`) and the colour the dotted
    pattern would give its dots on this background: near 1 when a codec paints the dotted pattern itself (a
    hedge between "plain" and "dotted"), near 0 for a grid of some other origin (e.g. upsampling artefacts)."""
    diff = _grid_difference(image, scene, seed, 0)
    accent = np.subtract(pattern_colour(COLOURS[scene.background]), COLOURS[scene.background], dtype=np.float32)
    return float(diff @ accent / (np.linalg.norm(diff) * np.linalg.norm(accent) + 1e-9))


def _grid_difference(image: Image.Image, scene: Scene, seed: int, shift: int) -> np.ndarray:
    if scene.pattern != "plain":
        raise ValueError(f"the dot-grid measures read plain backgrounds; this scene is {scene.pattern}")
    pixels = np.asarray(image.convert("RGB"), np.float32)
    dots, between = _masks(scene, pixels.shape[0], seed, shift)
    if not dots.any() or not between.any():
        return np.full(3, np.nan, np.float32)  # objects cover the background
    return pixels[dots].mean(0) - pixels[between].mean(0)
