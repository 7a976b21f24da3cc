"""Pick the restorer's guidance per rate point (``restorer.guidance_by_quality``) on val scenes.

    python benchmarks/pick_guidance.py [--scenes 200] [--qualities 1 2 3] [--guidance 1 1.5 2 3] [--json out.json]

For held-out **val** scenes (the test split stays for the figures RESULTS.md reports): each rate point's
reconstruction restored with the tiny LMM's caption of the original and the colour fix (what a user gets),
at each guidance scale; the referee's exact-scene accuracy, its distance to the original and PSNR. The
referee is used by no codec stage. Prints a Markdown table and the best guidance per point (most exact
scenes; ties go to the smaller distance). Rerun it after retraining the LIC, the LMM or the restorer.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from itc_core.codec import ImageTextCodec
from itc_core.evaluate import guidance_study
from itc_core.tinyworld import split_seeds
from itc_core.tinyworld.referee import Referee


def best(rows: dict) -> float:
    """The guidance with the most exact scenes (ties: the smaller referee distance)."""
    return max(rows, key=lambda g: (round(rows[g]["exact"], 6), -rows[g]["referee_distance"]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the figures to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    table = guidance_study(ImageTextCodec.from_preset(args.preset), Referee.load(), split_seeds("val", args.scenes),
                           args.qualities, args.guidance)
    print(f"\n{args.scenes} val scenes; LMM caption + colour fix; exact %, referee distance, PSNR\n")
    print("| guidance | " + " | ".join(f"q{q}" for q in table) + " |")
    print("|---|" + "---|" * len(table))
    for g in args.guidance:
        print(f"| {g:g} | " + " | ".join(f"{table[q][g]['exact']:.1f}, {table[q][g]['referee_distance']:.4f}, "
                                         f"{table[q][g]['psnr']:.2f} dB" for q in table) + " |")
    picks = {q: best(rows) for q, rows in table.items()}
    print("\nbest guidance per rate point: " + ", ".join(f"q{q} {g:g}" for q, g in picks.items())
          + f"   ({(time.time() - t0) / 60:.1f} min)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"scenes": args.scenes, "split": "val", "table": table, "best": picks}, f, indent=1)


if __name__ == "__main__":
    main()
