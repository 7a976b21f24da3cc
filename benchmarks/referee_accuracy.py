"""The referee's figures: accuracy on held-out originals and on LIC reconstructions, and its distance.

    python benchmarks/referee_accuracy.py [--scenes 1000] [--split test] [--preset tiny] [--referee DIR] [--cache DIR] [--json out.json]

For each of ``--scenes`` held-out scenes: the referee's exact-scene and per-attribute accuracy on the
original, then on the LIC reconstruction (real entropy-coded bytes, ``decompress`` output) at every
rate point of the preset. The referee never saw LIC outputs in training: those rows are for
information. Distance rows: referee distance of the original to itself (must be 0) and to each
reconstruction (mean, median, 90th percentile), and whether the mean falls as the rate rises.
Prints a table; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import batch, split_seeds
from itc_core.tinyworld.referee import Referee, as_batch
from itc_core.tinyworld.scenes import ATTRIBUTES as SCENE_ATTRIBUTES

ATTRIBUTES = ("exact", *SCENE_ATTRIBUTES)


def reconstructions(codec: ImageTextCodec, quality: int, originals: torch.Tensor, key: str,
                    cache: Path | None) -> tuple[torch.Tensor, float]:
    """LIC reconstructions of ``originals`` at ``quality`` and their mean real bpp (kept in ``cache`` if given)."""
    lic = codec.image_codec(quality)
    path = cache / f"{key}_q{quality}_{lic.fingerprint[:12]}.npz" if cache else None
    if path and path.exists():
        saved = np.load(path)
        return torch.from_numpy(saved["images"]).float() / 255, float(saved["bpp"])
    out, bpp = [], []
    for x in tqdm(originals, desc=f"LIC q{quality}", mininterval=5, leave=False):
        payload = lic.compress(x[None])
        out.append(lic.decompress(payload.strings, payload.height, payload.width)[0])
        bpp.append(payload.bpp)
    images = (torch.stack(out) * 255).round().to(torch.uint8)  # 8 bits, as a decoded PNG would be
    if path:
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, images=images.numpy(), bpp=np.mean(bpp))
    return images.float() / 255, float(np.mean(bpp))


def row(name: str, acc: dict, dist: torch.Tensor | None = None, bpp: float | None = None) -> dict:
    """One table row: accuracy per attribute, distance statistics and bpp."""
    out = {"input": name, "bpp": bpp, **{k: acc[k] for k in ATTRIBUTES}}
    if dist is not None:
        d = dist.numpy()
        out.update(distance_mean=float(d.mean()), distance_median=float(np.median(d)),
                   distance_p90=float(np.quantile(d, 0.9)))
    return out


def run(preset: str, split: str, n_scenes: int, referee_dir: str | None = None, cache: Path | None = None) -> dict:
    """Every figure of the benchmark as a dict."""
    referee = Referee.load(referee_dir)
    seeds = split_seeds(split, n_scenes)
    originals = as_batch(batch(seeds))
    t0 = time.perf_counter()
    rows = [row("original", referee.accuracy(originals, seeds), referee.distance(originals, originals))]
    read_seconds = time.perf_counter() - t0
    codec = ImageTextCodec.from_preset(preset)
    for q in codec.config.image_codec.qualities:
        recon, bpp = reconstructions(codec, q, originals, f"{preset}_{split}_{n_scenes}", cache)
        rows.append(row(f"LIC q{q}", referee.accuracy(recon, seeds), referee.distance(originals, recon), bpp))
    means = [r["distance_mean"] for r in rows[1:]]
    return {"split": split, "scenes": n_scenes, "rows": rows,
            "distance_monotone_in_rate": bool(all(a > b for a, b in zip(means, means[1:]))),
            "read_and_distance_seconds_per_1000": read_seconds / n_scenes * 1000,
            "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--referee", help="the referee's folder (default: data/tiny/referee)")
    parser.add_argument("--cache", type=Path, help="keep LIC reconstructions here (keyed by the LIC weights' hash)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    result = run(args.preset, args.split, args.scenes, args.referee, args.cache)
    print(f"referee on {result['scenes']} {result['split']} scenes (accuracy %, referee distance)")
    print(f"{'input':<9} {'bpp':>6} " + " ".join(f"{k:>7}" for k in ATTRIBUTES) + f" {'d mean':>7} {'d med':>7} {'d p90':>7}")
    for r in result["rows"]:
        bpp = f"{r['bpp']:.4f}" if r["bpp"] is not None else "-"
        print(f"{r['input']:<9} {bpp:>6} " + " ".join(f"{100 * r[k]:7.2f}" for k in ATTRIBUTES)
              + f" {r['distance_mean']:7.4f} {r['distance_median']:7.4f} {r['distance_p90']:7.4f}")
    print(f"distance falls as the rate rises: {result['distance_monotone_in_rate']}; "
          f"reading + distance: {result['read_and_distance_seconds_per_1000']:.2f} s per 1,000 scenes "
          f"({result['threads']} thread(s))")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
