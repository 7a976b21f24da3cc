"""How long the bootstrap confidence intervals of ``bd_with_ci`` take on a table the size of a full evaluation.

    python benchmarks/bd_bootstrap.py [--images 200] [--points 8] [--boot 1000] [--repeats 3]

Builds seeded synthetic per-image rows (two methods, ``--points`` rate points, the test
method 30 % cheaper at equal quality, per-image spread in rate and quality), then times
``bd_with_ci`` on PSNR and on a lower-is-better metric. Prints the median wall time and the
figures it returned. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from itc_core.metrics import bd_with_ci


def synthetic_rows(images: int, points: int, seed: int = 0) -> list[dict]:
    """Per-image rows of ``anchor`` and ``test`` (test: the same quality at 70 % of the rate)."""
    rng = np.random.default_rng(seed)
    base = np.geomspace(0.02, 0.5, points)
    rows = []
    for i in range(images):
        scale, offset = rng.lognormal(0, 0.3), rng.normal(0, 1.5)
        for method, factor in (("anchor", 1.0), ("test", 0.7)):
            for p, b in enumerate(base):
                bpp = float(b * scale * factor * rng.lognormal(0, 0.02))
                quality = 30 + 4 * np.log(b * scale) + offset + rng.normal(0, 0.2)
                rows.append({"image": f"img{i:04d}", "method": method, "point": p, "bpp": bpp,
                             "psnr": float(quality), "lpips": float(1 / (1 + np.exp(0.3 * quality - 7)))})
    return rows


def main() -> None:
    """Time ``bd_with_ci`` and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--points", type=int, default=8)
    parser.add_argument("--boot", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = synthetic_rows(args.images, args.points)
    for key in ("psnr", "lpips"):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = bd_with_ci(rows, "anchor", "test", key, n_boot=args.boot)
            times.append(time.perf_counter() - start)
        print(f"{key}: {args.images} images x {args.points} points x 2 methods, {args.boot} resamples: "
              f"median {np.median(times):.2f} s over {args.repeats} runs")
        print(f"  BD-rate {result['bd_rate']:.2f} % CI {result['bd_rate_ci'][0]:.2f} .. {result['bd_rate_ci'][1]:.2f}; "
              f"BD-{key} {result['bd_quality']:.4f} CI {result['bd_quality_ci'][0]:.4f} .. "
              f"{result['bd_quality_ci'][1]:.4f}; {result['boot_valid']}/{args.boot} resamples valid")


if __name__ == "__main__":
    main()
