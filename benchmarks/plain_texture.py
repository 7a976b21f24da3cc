"""The dot grid on plain backgrounds: how much of the "dotted" pattern each LIC rate point paints where there is none.

    python benchmarks/plain_texture.py [--scenes 100] [--preset tiny] [--semantic] [--json out.json]

On the first ``--scenes`` held-out test scenes whose background is plain, each rate point's
reconstruction (a real compress/decompress round trip) is measured with
``itc_core.tinyworld.texture.dot_grid_contrast``: the mean colour on the dotted pattern's lattice
against the background between its dots, in 8-bit levels. The control moves the lattice half a
period sideways, where no pattern puts dots: what an uneven but grid-free background gives. The
dotted pattern itself (42 levels on the first 100 such scenes) is printed for scale. The colour cosine says
whether the grid has the dotted pattern's own colour (near 1: the codec paints that pattern, a hedge between
"plain" and "dotted") or not (near 0). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import yaml

from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import generate_scene, render, sample, split_seeds
from itc_core.tinyworld.texture import dot_grid_colour_cosine, dot_grid_contrast


def plain_scenes(n: int) -> list[int]:
    """The first ``n`` test seeds whose scene has a plain background."""
    seeds = []
    for seed in split_seeds("test", 100_000):
        if generate_scene(seed).pattern == "plain":
            seeds.append(seed)
            if len(seeds) == n:
                return seeds
    raise ValueError(f"fewer than {n} plain test scenes")


def measure(codec: ImageTextCodec, seeds: list[int]) -> list[dict]:
    """Per rate point: mean and 90th percentile of the dot-grid contrast, and the control's mean."""
    rows = []
    for q in codec.config.image_codec.qualities:
        grid, control, cosine = [], [], []
        for seed in seeds:
            scene, image = generate_scene(seed), sample(seed)[0]
            recon = codec.reconstruct(image, q)
            grid.append(dot_grid_contrast(recon, scene, seed))
            control.append(dot_grid_contrast(recon, scene, seed, shift=4))
            cosine.append(dot_grid_colour_cosine(recon, scene, seed))
        rows.append({"quality": q, "scenes": len(seeds), "contrast_mean": float(np.nanmean(grid)),
                     "contrast_p90": float(np.nanpercentile(grid, 90)), "control_mean": float(np.nanmean(control)),
                     "colour_cosine_mean": float(np.nanmean(cosine))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--semantic", action="store_true", help="also the preset's semantic variant")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    seeds = plain_scenes(args.scenes)
    dotted = np.nanmean([dot_grid_contrast(render(replace(generate_scene(s), pattern="dotted"), seed=s),
                                           generate_scene(s), s) for s in seeds])
    codecs = {"base": ImageTextCodec.from_preset(args.preset)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.semantic:
            path = Path(tmp) / "semantic.yaml"
            path.write_text(yaml.safe_dump({"base": args.preset, "image_codec": {"variant": "semantic"}}))
            codecs["semantic"] = ImageTextCodec.from_preset(str(path))
        rows = [{"variant": name, **row} for name, codec in codecs.items() for row in measure(codec, seeds)]
    print(f"{len(seeds)} plain-background test scenes; the dotted pattern itself: {dotted:.1f} levels")
    print(f"{'variant':>9} {'q':>2} {'grid mean':>10} {'grid p90':>9} {'control':>8} {'colour cos':>10}"
          "  (levels; cos: the grid against the dotted pattern's colour)")
    for r in rows:
        print(f"{r['variant']:>9} {r['quality']:>2} {r['contrast_mean']:10.2f} {r['contrast_p90']:9.2f} "
              f"{r['control_mean']:8.2f} {r['colour_cosine_mean']:10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"dotted_pattern": dotted, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
