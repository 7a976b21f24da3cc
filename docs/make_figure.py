"""The README's overview figure: a tiny-world scene through the shipped tiny models, beside WebP.

    python docs/make_figure.py                  # writes docs/figures/overview.png
    python docs/make_figure.py --seed 2000003 --out /tmp/overview.png

Panels: the original scene; the LIC reconstruction at the lowest rate point, which both sides see;
the caption the tiny LMM wrote, with its coded bits; the restored image that ``decode`` returns; and
WebP at its lowest quality (0), the smallest file Pillow's WebP makes of the same scene. The scene is
by default the first test-split scene with at least ``--min-objects`` objects (a fixed rule, not a
pick by outcome). Everything is the real codec: ``ImageTextCodec.from_preset("tiny")``, ``encode``,
``decode``, whole files on both sides.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from itc_core.codec import ImageTextCodec  # noqa: E402
from itc_core.rd import pillow_round_trip  # noqa: E402
from itc_core.tinyworld.scenes import generate_scene, sample, split_seeds  # noqa: E402

OUT = Path(__file__).resolve().parent / "figures" / "overview.png"


def first_scene(min_objects: int) -> int:
    """The first test-split seed whose scene has at least ``min_objects`` objects."""
    return next(s for s in split_seeds("test", 1000) if len(generate_scene(s).objects) >= min_objects)


def overview(seed: int, quality: int = 1):
    """The figure for test scene ``seed`` coded at ``quality`` by the tiny preset; returns (Figure, facts)."""
    image, truth = sample(seed)
    codec = ImageTextCodec.from_preset("tiny")
    result = codec.encode(image, quality=quality)
    decoded = codec.decode(result.data)
    webp_bytes, webp = pillow_round_trip(image, "WEBP", 0)
    facts = {"seed": seed, "itc_bytes": len(result.data), "bpp": result.bpp, "caption": decoded.caption,
             "method": decoded.file.text_method,
             "caption_bits": result.bits["caption"], "webp_bytes": webp_bytes, "true_caption": truth}
    fig, axes = plt.subplots(1, 5, figsize=(12.5, 3.1), gridspec_kw={"width_ratios": [1, 1, 1.5, 1, 1]})
    panels = {0: ("original scene\n64×64", image),
              1: (f"LIC reconstruction, q{quality}\n(both sides see it)", result.reconstruction),
              3: (f"restored: the decoder's output\n.itc file {len(result.data)} bytes ({result.bpp:.3f} bpp)",
                  decoded.image),
              4: (f"WebP, lowest quality\n{webp_bytes} bytes ({8 * webp_bytes / 4096:.3f} bpp)", webp)}
    for i, (title, picture) in panels.items():
        axes[i].imshow(picture, interpolation="nearest")
        axes[i].set_title(title, fontsize=9)
        axes[i].axis("off")
    words = decoded.caption.split()
    lines = [" ".join(words[i:i + 4]) for i in range(0, len(words), 4)]
    axes[2].text(0.5, 0.55, "\n".join(f"“{l}" if i == 0 else l for i, l in enumerate(lines)) + "”",
                 ha="center", va="center", fontsize=9, wrap=True)
    verdict = "the scene's true caption" if decoded.caption == truth else f"true: {truth}"
    axes[2].text(0.5, 0.08, f"({verdict})", ha="center", va="center", fontsize=8, color="0.4", wrap=True)
    method = decoded.file.text_method
    axes[2].set_title(f"caption by the tiny LMM\ncoded in {result.bits['caption']:.1f} bits ({method})", fontsize=9)
    axes[2].axis("off")
    fig.tight_layout()
    return fig, facts


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, help="test scene seed (default: the first with --min-objects objects)")
    p.add_argument("--min-objects", type=int, default=3)
    p.add_argument("--quality", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the tiny models are fastest on one thread
    fig, facts = overview(args.seed if args.seed is not None else first_scene(args.min_objects), args.quality)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=80)
    buffer.seek(0)  # 256 colours, no dithering: a small file (about 20 KB), the panels' pixels as drawn
    Image.open(buffer).convert("RGB").quantize(256, dither=Image.Dither.NONE).save(args.out, optimize=True)
    print(facts)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
