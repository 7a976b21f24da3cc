"""Is an image a tiny-world scene? The cheap, model-free check behind a preset's ``domain`` key.

The ``tiny`` preset's models (LIC, LMM, restorer) know nothing but the 64x64 scenes of
:mod:`itc_core.tinyworld.scenes`. Given anything else, the LMM still writes a tiny-world caption and the
restorer paints its shapes over the picture: matplotlib's ``grace_hopper.jpg`` (512x600) at q1 (8,913 bytes)
was captioned "a large purple cross at the top right, a large orange circle in the centre ..." up to the token
limit, and restoring took it from 17.05 dB (bare) to 14.81 dB; WebP in as many bytes gives 29.69 dB.
With ``domain: tiny-world`` (``itc_core/presets/tiny.yaml``) the codec therefore checks its input::

    verdict = check_domain(image, "tiny-world")   # DomainVerdict(in_domain=False, reason="512x600 px, ...")

The criterion follows what ``scenes.render`` draws and reads nothing but the pixels. No model runs, and the
referee, the independent judge of tiny-world images, is never consulted; it takes 3-11 ms for 64x64 and
45-83 ms for 512x600 (median of 20, two runs on a shared 2-core machine), against seconds for the LMM.

1. **Size**: a scene is 64x64. ``render`` draws other sizes, but the models do not know them: 20 val scenes
   drawn at 32, 48, 96 or 128 px and restored with their true caption came out worse than the bare
   reconstruction in 17-20 of 20 at q1 and q3 (by 0.8-1.1 dB on average at q1, 1.2-3.4 dB at q3), where the
   same scenes at 64 px gain 3.6 dB (q1) and 4.5 dB (q3).
2. **Palette**: a scene is flat fills of the ten ``COLOURS`` and their ten pattern shades, so most of its
   pixels *are* one of those 20 colours; only antialiased edges blend two. :func:`palette_coverage` is the
   fraction of pixels within 8 levels (Euclidean, 8-bit RGB) of one of them; a scene has at least
   ``MIN_COVERAGE``. The 20 colours are read off the renderer itself (each background drawn striped).

Calibration (``benchmarks/out_of_domain.py``, which prints every figure here): the lowest coverage of 2,000
train and 1,000 val scenes is 0.835; the highest of the 24 64x64 out-of-world images of the calibration set
(thumbnails and crops of matplotlib's sample photos, charts, noise, gradients, flat colours) is 0.40, a crop
of the dark jacket in ``grace_hopper.jpg``, near the palette's black. ``MIN_COVERAGE`` = 0.6 lies between.
Held out: all 1,000 test scenes pass (lowest 0.839); none of the 70 out-of-world images does (33 of the
calibration set, 37 held out: other crops and seeds, torchvision's FakeData, other charts). A scene saved as
JPEG is noisier and may fail (121 of 200 pass at JPEG quality 95, 84 at 75): code the PNG.

The decoder cannot repeat the palette check: the LIC blurs a scene's colours, to a coverage of 0.01-0.62 at
q1 (200 val scenes), while the q1 reconstructions of out-of-world images reach 0.50. It applies the part it
can, the size, and otherwise trusts the encoder, which marks a file whose image is outside the domain (caption
method code 7 of the header: no caption, no byte more): :func:`restores_file` restores only unmarked 64x64
files. Scenes coded without a caption (``caption=False`` or ``""``) are still restored, which without a caption
gains 1.4 dB at q1 and 3.2 dB at q3 on average (200 val scenes; 34 and 10 of them end below the bare
reconstruction). ``decode(..., domain_check=False)``, ``decode(..., restore=True)`` or
``itc decode --no-domain-check`` restore any file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from .config import DOMAINS
from .errors import ConfigError

__all__ = ["DOMAINS", "SCENE_SIZE", "MIN_COVERAGE", "COLOUR_TOLERANCE", "MAX_SAMPLES", "DomainVerdict", "palette",
           "palette_coverage", "check_domain", "restores_file", "out_of_domain_note", "unrestored_note"]

SCENE_SIZE = (64, 64)   # (width, height) of every tiny-world scene the models were trained on
MIN_COVERAGE = 0.6      # scenes (train + val) >= 0.835, 64x64 out-of-world images <= 0.40: see the docstring
COLOUR_TOLERANCE = 8.0  # Euclidean distance in 8-bit RGB within which a pixel counts as a palette colour
MAX_SAMPLES = 65536     # larger images are sampled on a regular grid of at most this many pixels


@dataclass(frozen=True)
class DomainVerdict:
    """Whether an image lies in a preset's ``domain``, with the figures the decision read.

    Attributes:
        reason: what decided, for a note: e.g. ``512x600 px, not 64x64`` or ``palette coverage 0.10 < 0.6``.
        coverage: :func:`palette_coverage` of the image (0-1).
    """

    domain: str
    in_domain: bool
    reason: str
    coverage: float


@lru_cache(maxsize=1)
def palette() -> np.ndarray:
    """(K, 3) int32: the colours a scene is filled with, the ten ``COLOURS`` and the shades of their patterns,
    read off ``render`` (each background drawn striped, without objects or antialiasing)."""
    from .tinyworld.scenes import COLOURS, Scene, render

    colours = set()
    for name in COLOURS:
        pixels = np.asarray(render(Scene((), name, "striped"), size=16, supersample=1)).reshape(-1, 3)
        colours.update(map(tuple, np.unique(pixels, axis=0).tolist()))
    return np.array(sorted(colours), dtype=np.int32)


def _sampled(image: Image.Image) -> np.ndarray:
    """(N, 3) int32 pixels of ``image`` (RGB), every ``step``-th row and column so that N <= MAX_SAMPLES."""
    pixels = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    step = max(1, int(np.ceil(np.sqrt(pixels.shape[0] * pixels.shape[1] / MAX_SAMPLES))))
    return pixels[::step, ::step].reshape(-1, 3).astype(np.int32)


def palette_coverage(image: Image.Image) -> float:
    """Fraction (0-1) of the pixels of ``image`` within ``COLOUR_TOLERANCE`` of a :func:`palette` colour."""
    pixels = _sampled(image)
    squared = ((pixels[:, None, :] - palette()[None]) ** 2).sum(-1).min(1)  # integers: exact on any machine
    return float((squared <= COLOUR_TOLERANCE ** 2).mean())


def _known(domain: str) -> None:
    if domain not in DOMAINS:
        raise ConfigError(f"unknown domain {domain!r}; valid: {', '.join(DOMAINS)}")


def check_domain(image: Image.Image, domain: str = "tiny-world") -> DomainVerdict:
    """Whether ``image`` (any PIL mode) is a scene of ``domain``: 64x64 and palette coverage >= ``MIN_COVERAGE``."""
    _known(domain)
    coverage = palette_coverage(image)
    if image.size != SCENE_SIZE:
        return DomainVerdict(domain, False, f"{image.width}x{image.height} px, not {SCENE_SIZE[0]}x{SCENE_SIZE[1]}",
                             coverage)
    if coverage < MIN_COVERAGE:
        return DomainVerdict(domain, False, f"palette coverage {coverage:.2f} < {MIN_COVERAGE}: not the flat "
                             "colours of a scene", coverage)
    return DomainVerdict(domain, True, f"palette coverage {coverage:.2f} >= {MIN_COVERAGE}", coverage)


def restores_file(domain: str, width: int, height: int, out_of_domain: bool) -> bool:
    """Whether the restorer of a ``domain`` preset restores a ``width`` x ``height`` file by default: the
    tiny world's only a 64x64 file the encoder did not mark as outside the domain."""
    _known(domain)
    return not out_of_domain and (width, height) == SCENE_SIZE


def out_of_domain_note(verdict: DomainVerdict, caption_given: bool, restored: bool) -> str:
    """The encoder's note on an image outside the preset's domain: what was stored, what to use instead
    (``restored``: whether the decoder will restore the file, :func:`restores_file`)."""
    if not caption_given:
        done = ", so no caption is stored and decoding gives the bare reconstruction"
    elif restored:
        done = "; the given caption is stored, and the decoder's restorer will apply it to an image it does not know"
    else:
        done = "; the given caption is stored, but the decoder will not restore the image"
    return (f"not a tiny-world scene ({verdict.reason}): the tiny preset's models know only 64x64 scenes of flat "
            f"shapes{done}; for photos use --preset laptop (hub models for real photos; the internet once), "
            "or --no-domain-check to code it as a scene anyway")


def unrestored_note(width: int, height: int, out_of_domain: bool) -> str:
    """The decoder's note on a file its tiny-world restorer leaves as it is (see :func:`restores_file`)."""
    why = (["was marked by its encoder as not a tiny-world scene"] if out_of_domain else []) + (
        [f"is {width}x{height} px, not {SCENE_SIZE[0]}x{SCENE_SIZE[1]}"] if (width, height) != SCENE_SIZE else [])
    return (f"not restored: the file {' and '.join(why)}, and the tiny preset's restorer knows only 64x64 "
            "tiny-world scenes; --no-domain-check restores it anyway")
