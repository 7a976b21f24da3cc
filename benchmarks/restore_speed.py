"""Restorer speed: decode time per 64×64 scene for 4, 8 and 20 denoising steps on one and two CPU threads.

    python benchmarks/restore_speed.py [--scenes 8] [--steps 4 8 20] [--threads 1 2] [--guidance G]

Times ``Restorer.restore`` on one image at a time (what ``itc decode`` does per
file), after loading and a warm-up call; the median over the scenes is printed,
with the LIC decode time for scale. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import sample, split_seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--steps", type=int, nargs="+", default=[4, 8, 20])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--guidance", type=float, help="guidance (default: the preset's; above or below 1 doubles the work)")
    p.add_argument("--preset", default="tiny")
    args = p.parse_args()
    codec = ImageTextCodec.from_preset(args.preset)
    codec.restorer.pipeline.set_progress_bar_config(disable=True)
    quality = codec.config.image_codec.quality  # the files below are coded at the preset's rate point
    guidance = codec.config.restorer.guidance_at(quality) if args.guidance is None else args.guidance
    items = [(codec.encode(im, caption=text, method="utf8").data) for im, text in
             (sample(s) for s in split_seeds("test", args.scenes))]
    print(f"preset {args.preset}, {args.scenes} scenes 64x64 at q{quality}, guidance {guidance}, colour fix "
          f"{codec.config.restorer.colour_fix}; median seconds per scene")
    print("| threads | LIC decode + caption | " + " | ".join(f"restore, {s} steps" for s in args.steps) + " |")
    print("|---|---|" + "---|" * len(args.steps))
    for threads in args.threads:
        torch.set_num_threads(threads)
        decoded = []
        lic = []
        for data in items:
            t0 = time.perf_counter()
            decoded.append(codec.decode(data, restore=False))
            lic.append(time.perf_counter() - t0)
        row = []
        for steps in args.steps:
            codec.restorer.restore(decoded[0].reconstruction, decoded[0].caption, steps=steps, guidance=guidance)
            times = []
            for d in decoded:
                t0 = time.perf_counter()
                codec.restorer.restore(d.reconstruction, d.caption, steps=steps, guidance=guidance)
                times.append(time.perf_counter() - t0)
            row.append(statistics.median(times))
        print(f"| {threads} | {statistics.median(lic):.3f} | " + " | ".join(f"{t:.3f}" for t in row) + " |")


if __name__ == "__main__":
    main()
