"""Procedural, seeded, captioned scenes: the tiny world's images and texts.

A scene is 1-3 objects (shape, colour, size, cell of a 3x3 grid) on a
background (colour, pattern). Its caption states every attribute in one fixed
grammar, and :func:`parse_caption` reads a caption back into a :class:`Scene`,
which is how attribute accuracy is measured later::

    >>> scene = generate_scene(7)
    >>> caption(scene)
    'a small black cross at the top left and a small red triangle at the top on a striped blue background'
    >>> parse_caption(caption(scene)) == scene
    True

Everything derives from the integer seed through :class:`random.Random`, whose
Mersenne Twister stream is the same on every platform, and from PIL's integer
rasteriser, so one seed gives the same pixels and caption on any machine.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "SHAPES", "COLOURS", "SIZES", "POSITIONS", "PATTERNS", "SPLITS",
    "SceneObject", "Scene", "generate_scene", "render", "pattern_colour", "caption", "parse_caption",
    "split_seeds", "sample", "caption_accuracy", "caption_confusions", "ATTRIBUTES",
]

SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross")
COLOURS = {
    "red": (220, 40, 40),
    "orange": (245, 140, 30),
    "yellow": (240, 220, 40),
    "green": (40, 170, 60),
    "cyan": (40, 200, 210),
    "blue": (40, 70, 220),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "black": (20, 20, 20),
}
SIZES = {"small": 0.22, "large": 0.40}  # radius as a fraction of a grid cell's width * 1.5
POSITIONS = (
    "top left", "top", "top right",
    "left", "centre", "right",
    "bottom left", "bottom", "bottom right",
)
PATTERNS = ("plain", "striped", "checkered", "dotted")
# Disjoint seed ranges: a scene's split is a property of its seed.
SPLITS = {"train": (0, 1_000_000), "val": (1_000_000, 1_100_000), "test": (2_000_000, 2_100_000)}


@dataclass(frozen=True)
class SceneObject:
    """One object: ``shape`` in SHAPES, ``colour`` in COLOURS, ``size`` in SIZES, ``position`` in POSITIONS."""

    shape: str
    colour: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """Objects sorted by grid position (reading order) on a background."""

    objects: tuple[SceneObject, ...]
    background: str
    pattern: str


def generate_scene(seed: int) -> Scene:
    """Draw a scene from ``seed``: 1-3 objects in distinct cells, colours distinct from the background."""
    rng = random.Random(seed)
    background = rng.choice(list(COLOURS))
    pattern = rng.choice(PATTERNS)
    n_objects = rng.randint(1, 3)
    cells = sorted(rng.sample(range(len(POSITIONS)), n_objects))
    object_colours = [c for c in COLOURS if c != background]
    objects = tuple(
        SceneObject(rng.choice(SHAPES), rng.choice(object_colours), rng.choice(list(SIZES)), POSITIONS[cell])
        for cell in cells
    )
    return Scene(objects, background, pattern)


# ---------------------------------------------------------------- captions

def _position_phrase(position: str) -> str:
    return "in the centre" if position == "centre" else f"at the {position}"


def caption(scene: Scene) -> str:
    """The scene's caption in the fixed grammar, e.g. 'a large red circle at the top left on a plain green background'."""
    parts = [f"a {o.size} {o.colour} {o.shape} {_position_phrase(o.position)}" for o in scene.objects]
    if len(parts) == 1:
        objects = parts[0]
    else:
        objects = ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{objects} on a {scene.pattern} {scene.background} background"


_ALT = lambda names: "|".join(sorted(map(re.escape, names), key=len, reverse=True))  # noqa: E731
_OBJECT_RE = re.compile(
    rf"a ({_ALT(SIZES)}) ({_ALT(COLOURS)}) ({_ALT(SHAPES)}) "
    rf"(?:in the (centre)|at the ({_ALT(p for p in POSITIONS if p != 'centre')}))"
)
_CAPTION_RE = re.compile(
    rf"(?P<objects>.+) on a (?P<pattern>{_ALT(PATTERNS)}) (?P<background>{_ALT(COLOURS)}) background"
)


def parse_caption(text: str) -> Scene:
    """Read a caption of the fixed grammar back into a :class:`Scene`.

    Raises:
        ValueError: if ``text`` is not a caption of the grammar (the message quotes it).
    """
    match = _CAPTION_RE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a tiny-world caption: {text!r}")
    pieces = re.split(r", | and ", match["objects"])
    objects = []
    for piece in pieces:
        m = _OBJECT_RE.fullmatch(piece)
        if not m:
            raise ValueError(f"not a tiny-world object phrase: {piece!r} in {text!r}")
        size, colour, shape, centre, position = m.groups()
        objects.append(SceneObject(shape, colour, size, centre or position))
    return Scene(tuple(objects), match["background"], match["pattern"])


# The per-attribute keys of ``caption_accuracy`` (besides "exact"), in the order tables print them.
ATTRIBUTES = ("shape", "colour", "size", "position", "count", "background", "pattern")


def caption_accuracy(predicted: list[str], seeds) -> dict:
    """Exact-caption match and per-attribute accuracy of ``predicted`` against scenes ``seeds``.

    ``seeds`` may also hold :class:`Scene` objects (e.g. a scene whose caption was edited).
    Objects are matched by grid position; an unparseable caption counts every attribute wrong.
    """
    counts = {k: [0, 0] for k in ATTRIBUTES}
    exact = 0
    for text, seed in zip(predicted, seeds):
        truth = seed if isinstance(seed, Scene) else generate_scene(seed)
        exact += text == caption(truth)
        try:
            guess = parse_caption(text)
        except ValueError:
            guess = None
        by_position = {o.position: o for o in guess.objects} if guess else {}
        for o in truth.objects:
            g = by_position.get(o.position)
            for attr in ("shape", "colour", "size"):
                counts[attr][0] += bool(g) and getattr(g, attr) == getattr(o, attr)
                counts[attr][1] += 1
        truth_cells = {o.position for o in truth.objects}
        for p in POSITIONS:
            counts["position"][0] += (p in truth_cells) == (p in by_position)
            counts["position"][1] += 1
        for attr, ok in (("count", guess and len(guess.objects) == len(truth.objects)),
                         ("background", guess and guess.background == truth.background),
                         ("pattern", guess and guess.pattern == truth.pattern)):
            counts[attr][0] += bool(ok)
            counts[attr][1] += 1
    return {"exact": exact / len(predicted), **{k: v[0] / v[1] for k, v in counts.items()}}


def caption_confusions(predicted: list[str], seeds, top: int | None = None) -> list[tuple[str, int]]:
    """What the wrong captions among ``predicted`` got wrong, most common first: ``("shape star→triangle", 20)``
    (the truth's value, then the caption's, for objects matched by grid position), ``"object missing"`` /
    ``"object extra"``, ``"background …"``, ``"pattern …"``, ``"unparseable"`` or ``"other wording"`` (the
    true scene, said otherwise); every wrong caption counts at least once. ``top`` keeps the first few."""
    from collections import Counter

    found = Counter()
    for text, seed in zip(predicted, seeds):
        truth = seed if isinstance(seed, Scene) else generate_scene(seed)
        if text == caption(truth):
            continue
        try:
            guess = parse_caption(text)
        except ValueError:
            found["unparseable"] += 1
            continue
        before = sum(found.values())
        mine = list(guess.objects)
        for o in truth.objects:
            g = next((g for g in mine if g.position == o.position), None)
            if g is None:
                found["object missing"] += 1
                continue
            mine.remove(g)
            for attr in ("shape", "colour", "size"):
                if getattr(g, attr) != getattr(o, attr):
                    found[f"{attr} {getattr(o, attr)}→{getattr(g, attr)}"] += 1
        found["object extra"] += len(mine)  # two objects named in one cell count the second as extra
        for attr in ("background", "pattern"):
            if getattr(guess, attr) != getattr(truth, attr):
                found[f"{attr} {getattr(truth, attr)}→{getattr(guess, attr)}"] += 1
        if sum(found.values()) == before:  # parses to the true scene, worded otherwise (e.g. objects reordered)
            found["other wording"] += 1
    return [(k, n) for k, n in found.most_common(top) if n]


# ---------------------------------------------------------------- rendering

def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    """Lighter (factor > 0) or darker (factor < 0) variant of a colour, for background patterns."""
    if factor >= 0:
        return tuple(round(c + (255 - c) * factor) for c in rgb)
    return tuple(round(c * (1 + factor)) for c in rgb)


def pattern_colour(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The shade a background pattern of colour ``rgb`` is drawn in (darker on light colours, lighter on dark)."""
    return _shade(rgb, -0.35) if sum(rgb) > 300 else _shade(rgb, 0.35)


def _draw_background(draw: ImageDraw.ImageDraw, scene: Scene, size: int) -> None:
    base = COLOURS[scene.background]
    draw.rectangle([0, 0, size, size], fill=base)
    accent = pattern_colour(base)
    period = max(size // 8, 2)
    if scene.pattern == "striped":
        for y in range(0, size, period):
            draw.rectangle([0, y, size, y + period // 2 - 1], fill=accent)
    elif scene.pattern == "checkered":
        for y in range(0, size, period):
            for x in range(0, size, period):
                if (x // period + y // period) % 2:
                    draw.rectangle([x, y, x + period - 1, y + period - 1], fill=accent)
    elif scene.pattern == "dotted":
        r = max(period // 5, 1)
        for y in range(period // 2, size, period):
            for x in range(period // 2, size, period):
                draw.ellipse([x - r, y - r, x + r, y + r], fill=accent)


def _polygon(cx: float, cy: float, r: float, n: int, rotation: float, inner: float | None = None):
    points = []
    steps = 2 * n if inner else n
    for k in range(steps):
        radius = r if (inner is None or k % 2 == 0) else r * inner
        angle = rotation + 2 * math.pi * k / steps
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, cell: float, jitter: tuple[float, float]) -> None:
    row, col = divmod(POSITIONS.index(obj.position), 3)
    cx, cy = (col + 0.5) * cell + jitter[0], (row + 0.5) * cell + jitter[1]
    r = SIZES[obj.size] * cell * 1.5 * 0.9
    fill = COLOURS[obj.colour]
    up = -math.pi / 2
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        s = r * 0.85
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.15, r, 3, up), fill=fill)
    elif obj.shape == "star":
        draw.polygon(_polygon(cx, cy, r, 5, up, inner=0.45), fill=fill)
    elif obj.shape == "diamond":
        draw.polygon(_polygon(cx, cy, r, 4, up), fill=fill)
    elif obj.shape == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, 0.0), fill=fill)
    elif obj.shape == "cross":
        a, b = r, r * 0.35
        draw.rectangle([cx - a, cy - b, cx + a, cy + b], fill=fill)
        draw.rectangle([cx - b, cy - a, cx + b, cy + a], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; valid: {', '.join(SHAPES)}")


def render(scene: Scene, size: int = 64, seed: int = 0, supersample: int = 4) -> Image.Image:
    """Draw ``scene`` as a ``size``×``size`` RGB image.

    ``seed`` only moves objects by a few pixels inside their cells (so that
    scenes with equal captions still differ); edges are antialiased by
    drawing at ``supersample``× and reducing with a box filter.
    """
    big = size * supersample
    image = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(image)
    _draw_background(draw, scene, big)
    rng = random.Random(seed ^ 0x5EED)
    cell = big / 3
    for obj in scene.objects:
        jitter = (rng.uniform(-0.08, 0.08) * cell, rng.uniform(-0.08, 0.08) * cell)
        _draw_object(draw, obj, cell, jitter)
    return image.reduce(supersample) if supersample > 1 else image


# ---------------------------------------------------------------- datasets

def split_seeds(split: str, count: int, start: int = 0) -> range:
    """``count`` seeds of ``split`` ('train', 'val' or 'test'), from offset ``start`` in its range."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    low, high = SPLITS[split]
    if low + start + count > high:
        raise ValueError(f"split {split!r} holds {high - low} seeds; asked for {start}+{count}")
    return range(low + start, low + start + count)


def sample(seed: int, size: int = 64) -> tuple[Image.Image, str]:
    """The image and caption of scene ``seed``."""
    scene = generate_scene(seed)
    return render(scene, size=size, seed=seed), caption(scene)


def batch(seeds, size: int = 64) -> np.ndarray:
    """Scenes ``seeds`` as one uint8 array of shape (N, size, size, 3)."""
    return np.stack([np.asarray(render(generate_scene(s), size=size, seed=s)) for s in seeds])
