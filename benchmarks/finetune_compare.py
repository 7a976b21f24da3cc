"""Base tiny LIC against its semantic-perceptual fine-tune at the same rate points, judged by the referee.

    python benchmarks/finetune_compare.py [--scenes 200] [--json out.json]
    python benchmarks/finetune_compare.py --lic FOLDER [--qualities Q ...]   # the shipped base against a retrained LIC
    python benchmarks/finetune_compare.py --variant NAME                    # against another variant of the preset

``--lic`` takes a folder that ``itc tiny-zoo --only lic --out X`` wrote (``X/lic``: weights and
manifest) and compares the rate points it holds with the shipped ones of the same numbers.

Whole ``.itc`` files (no caption) on held-out test scenes: real bpp, PSNR, the tiny CLIP's
image-text similarity with the true caption and LPIPS-style distance (training terms of the
fine-tune: what it optimised), and the referee's distance and exact-scene / per-attribute
accuracy (the independent verdict). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import yaml

from itc_core.codec import ImageTextCodec
from itc_core.finetune import compare_lic_variants
from itc_core.tinyworld import split_seeds
from itc_core.tinyworld.checkpoint import lic_config

COLUMNS = ("bpp", "psnr_db", "clip_i2t", "lpips_clip", "referee_distance", "referee_exact", "referee_shape",
           "referee_colour")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--qualities", type=int, nargs="+", help="rate points to compare (default: all of them)")
    parser.add_argument("--lic", help="a retrained LIC folder (weights + manifest.json) instead of the semantic variant")
    parser.add_argument("--variant", default="semantic", help="the preset's LIC variant to compare (default: semantic)")
    args = parser.parse_args()
    if args.lic and args.variant != "semantic":
        parser.error("--lic compares a retrained folder with the base; --variant a variant of the preset: one of them")
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        other_yaml = Path(tmp) / "other.yaml"
        if args.lic:
            folder = Path(args.lic).resolve()
            models = json.loads((folder / "manifest.json").read_text())["models"]
            qualities = sorted(int(q) for q in models)
            lic = lic_config("tiny", folder)  # the folder's weights, and its points' own widths from the manifest
            other_yaml.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {
                "weights": lic.weights, "sizes": {q: w for q, w in lic.sizes.items() if q in qualities}, "qualities": qualities, "quality": qualities[0]}}))
            name = "retrained"
        else:
            other_yaml.write_text(yaml.safe_dump({"base": "tiny", "image_codec": {"variant": args.variant}}))
            name = args.variant
        other = ImageTextCodec.from_preset(str(other_yaml))
        qualities = args.qualities or other.config.image_codec.qualities
        rows = compare_lic_variants({"base": ImageTextCodec.from_preset("tiny"), name: other},
                                    split_seeds("test", args.scenes), qualities)
    print(f"{args.scenes} held-out test scenes, whole .itc files without caption")
    print(f"{'variant':>9} {'q':>2} " + " ".join(f"{c:>16}" for c in COLUMNS))
    for r in sorted(rows, key=lambda r: (r["quality"], r["variant"])):
        print(f"{r['variant']:>9} {r['quality']:>2} " + " ".join(f"{r[c]:16.4f}" for c in COLUMNS))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
