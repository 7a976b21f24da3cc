"""Issue 8 acceptance: what the restorer buys at the two lowest rates, judged by the referee.

    python benchmarks/restore_acceptance.py [--scenes 200] [--qualities Q ...] [--steps N] [--guidance G] [--json out.json]
                                            [--preset tiny|PRESET.yaml]

For held-out test scenes at the first two rate points of the preset (or ``--qualities``): the
referee's exact-scene and per-attribute accuracy, the referee distance to the
original and PSNR for the LIC reconstruction alone and for restorations without
a caption, with the tiny LMM's caption of the original (what a user gets) and
with the true caption (the restorer's ceiling), each without and with the wavelet
colour fix. Caption control: the true caption with one object's colour word
changed; the share of restorations in which the referee reads the new colour on
that object. The referee is trained on originals only and used by no codec
stage (``itc_core.evaluate.restoration_study``). Prints tables; a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from itc_core.codec import ImageTextCodec
from itc_core.evaluate import REFEREE_ATTRIBUTES, restoration_study
from itc_core.tinyworld import split_seeds
from itc_core.tinyworld.referee import Referee


def print_report(report: dict) -> None:
    """The acceptance tables in Markdown."""
    guidance = ", ".join(f"q{q} {g}" for q, g in report["guidance"].items())
    print(f"{report['scenes']} test scenes, {report['steps']} steps, guidance {guidance}; "
          f"tiny LMM captions exact: {report['lmm_caption_exact']:.1f} %")
    for q, r in report["rates"].items():
        print(f"\n### quality {q} (image file {r['bpp_image_file']:.3f} bpp, caption extra)\n")
        print("| decoder output | " + " | ".join(REFEREE_ATTRIBUTES) + " | referee distance | PSNR (dB) |")
        print("|---|" + "---|" * (len(REFEREE_ATTRIBUTES) + 2))
        for name, row in r["rows"].items():
            print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in REFEREE_ATTRIBUTES)
                  + f" | {row['referee_distance']:.4f} | {row['psnr']:.2f} |")
        print("\ncolour word of one object edited in the true caption; the referee reads the new colour there (%): "
              + ", ".join(f"{k} {v:.1f}" for k, v in r["colour_control"].items()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--qualities", type=int, nargs="+", help="rate points (default: the preset's two lowest)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the preset's)")
    p.add_argument("--guidance", type=float, help="guidance (default: the preset's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures to this file")
    p.add_argument("--preset", default="tiny", help="a preset name or YAML (e.g. a retrained LIC and restorer)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    report = restoration_study(ImageTextCodec.from_preset(args.preset), Referee.load(), split_seeds("test", args.scenes),
                               qualities=args.qualities, steps=args.steps, guidance=args.guidance)
    report["seconds"] = round(time.time() - t0, 1)
    print_report(report)
    print(f"\n({report['seconds']} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
