"""Evaluation speed: seconds per tiny-world scene for each ``itc eval`` method (every rate point), one thread.

    python benchmarks/eval_speed.py [--scenes 20] [--threads 1]

Runs :class:`itc_core.evalrun.MethodRunner` exactly as ``itc eval`` does (decode,
restore, score), method by method on each scene, after loading the models; the
LMM's caption (shared by ``ours``, ``ours-full`` and ``misc``) is timed apart.
Prints the mean per scene and the extrapolated time of a 200-scene run in one
process (without the summary's bootstrap). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from itc_core.data import open_dataset
from itc_core.evalrun import EvalSettings, MethodRunner


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scenes", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="tiny")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    settings = EvalSettings(preset=args.preset, limit=args.scenes)
    dataset = open_dataset("tiny", args.scenes)
    start = time.perf_counter()
    runner = MethodRunner(settings, dataset[0])
    print(f"preset {args.preset}, {args.scenes} scenes, {args.threads} thread(s); models loaded in "
          f"{time.perf_counter() - start:.1f} s; missing: {runner.missing or 'none'}")
    methods = [m for m in settings.methods if m not in runner.missing]
    seconds = dict.fromkeys(["LMM caption", *methods], 0.0)
    for i in range(len(dataset)):
        runner.begin_image(dataset[i])
        start = time.perf_counter()
        runner.caption()
        seconds["LMM caption"] += time.perf_counter() - start
        for method in methods:
            start = time.perf_counter()
            runner.rows(method)
            seconds[method] += time.perf_counter() - start
    print("| method | rate points | seconds per scene |")
    print("|---|---|---|")
    for name, total in seconds.items():
        points = len(runner.points(name)) if name in methods else "-"
        print(f"| {name} | {points} | {total / len(dataset):.3f} |")
    per_scene = sum(seconds.values()) / len(dataset)
    print(f"all methods: {per_scene:.2f} s per scene; 200 scenes ≈ {200 * per_scene / 60:.1f} min in one process")


if __name__ == "__main__":
    main()
