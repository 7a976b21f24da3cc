"""The tiny world: seeded captioned scenes and the recipes that train the tiny model zoo (DESIGN §6)."""

from .scenes import (  # noqa: F401
    COLOURS, PATTERNS, POSITIONS, SHAPES, SIZES, SPLITS, Scene, SceneObject,
    batch, caption, caption_accuracy, generate_scene, parse_caption, render, sample, split_seeds,
)
