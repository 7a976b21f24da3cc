"""The tiny LIC against what a user would pick instead: WebP and JPEG through Pillow, whole files on both sides.

    python benchmarks/lic_vs_webp.py [--scenes 100] [--preset tiny] [--compare OLD_PRESET.yaml ...] [--out DIR]

For every LIC rate point of each preset, every held-out test scene goes through the
whole ``.itc`` path (``ImageTextCodec.encode`` without caption → bytes → ``decode``);
WebP (libwebp, method 6) and JPEG (libjpeg, 4:2:0) files come from Pillow at
several qualities. Rates are whole files (containers included) in bits per pixel,
averaged over scenes; PSNR is the mean over scenes. Prints the table, the
Bjøntegaard delta rate against WebP (``bjontegaard`` package, pchip, over the
overlapping range), whether any LIC point lies below WebP's curve, and writes
``rd.png`` and ``rd.json`` into ``--out``. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from itc_core.rd import (JPEG_QUALITIES, WEBP_QUALITIES, bd_rate_vs, below_curve, lic_points, monotone,
                         pillow_point)
from itc_core.tinyworld import sample, split_seeds


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    """Save the RD curves (bpp against PSNR) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["bpp"])
        ax.plot([r["bpp"] for r in rows], [r["psnr_db"] for r in rows], "o-", label=name, ms=4)
    ax.set_xlabel("bits per pixel (whole files)")
    ax.set_ylabel("PSNR (dB)")
    ax.set_xlim(0, 1.2)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--compare", nargs="*", default=[], help="other presets (YAML) to put on the same plot")
    parser.add_argument("--out", default="outputs/lic_vs_webp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = [sample(s)[0] for s in split_seeds("test", args.scenes)]
    curves = {f"LIC ({p})": lic_points(p, images) for p in [args.preset, *args.compare]}
    curves["WebP"] = [pillow_point(images, "WEBP", q) for q in WEBP_QUALITIES]
    curves["JPEG"] = [pillow_point(images, "JPEG", q) for q in JPEG_QUALITIES]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{args.scenes} held-out test scenes (64x64), whole files, means over scenes")
    summary = {}
    for name, rows in curves.items():
        print(f"\n{name}\n  {'q':>3} {'bpp':>7} {'PSNR':>7}")
        for r in rows:
            print(f"  {r['quality']:>3} {r['bpp']:7.4f} {r['psnr_db']:7.2f}")
        if name.startswith("LIC"):
            bd = bd_rate_vs(curves["WebP"], rows)
            under = below_curve(curves["WebP"], rows)
            dropped = [r["quality"] for r in rows if r not in monotone(rows)]
            summary[name] = {"bd_rate_vs_webp_pct": bd, "points_below_webp": under, "not_monotone": dropped,
                             "lowest_bpp": min(r["bpp"] for r in rows), "highest_bpp": max(r["bpp"] for r in rows)}
            print(f"  BD-rate vs WebP (PSNR, pchip, overlap): {bd:+.1f} %" if bd is not None else "  no overlap with WebP")
            print(f"  rate points below WebP's curve: {under or 'none'}; left out of the BD fit (not monotone): "
                  f"{dropped or 'none'}")
    plot(curves, out / "rd.png")
    (out / "rd.json").write_text(json.dumps({"scenes": args.scenes, "curves": curves, "summary": summary}, indent=2))
    print(f"\n-> {out / 'rd.png'}, {out / 'rd.json'}")


if __name__ == "__main__":
    main()
