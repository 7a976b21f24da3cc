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
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from itc_core.codec import ImageTextCodec
from itc_core.data import image_to_tensor
from itc_core.metrics import psnr
from itc_core.tinyworld import sample, split_seeds

WEBP_QUALITIES = (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90)
JPEG_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90)


def pillow_point(images: list[Image.Image], fmt: str, quality: int) -> dict:
    """Mean whole-file bpp and PSNR of ``images`` saved by Pillow as ``fmt`` at ``quality``."""
    bpps, psnrs = [], []
    for image in images:
        buf = io.BytesIO()
        options = {"method": 6} if fmt == "WEBP" else {}
        image.save(buf, fmt, quality=quality, **options)
        decoded = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        bpps.append(8 * buf.tell() / (image.width * image.height))
        psnrs.append(psnr(image_to_tensor(image), image_to_tensor(decoded)))
    return {"quality": quality, "bpp": float(np.mean(bpps)), "psnr_db": float(np.mean(psnrs))}


def lic_points(preset: str, images: list[Image.Image]) -> list[dict]:
    """Mean whole-file bpp (``.itc`` bytes) and PSNR of the decoded image, per rate point of ``preset``."""
    codec = ImageTextCodec.from_preset(preset)
    rows = []
    for q in codec.config.image_codec.qualities:
        bpps, psnrs = [], []
        for image in images:
            result = codec.encode(image, q, caption=False)
            decoded = codec.decode(result.data).image
            bpps.append(result.bpp)
            psnrs.append(psnr(image_to_tensor(image), image_to_tensor(decoded)))
        rows.append({"quality": q, "bpp": float(np.mean(bpps)), "psnr_db": float(np.mean(psnrs))})
    return rows


def monotone(rows: list[dict]) -> list[dict]:
    """The points of a curve, by rate, whose PSNR beats every cheaper point's (BD fits need monotone curves)."""
    kept = []
    for r in sorted(rows, key=lambda r: r["bpp"]):
        if not kept or r["psnr_db"] > kept[-1]["psnr_db"]:
            kept.append(r)
    return kept


def bd_rate_vs(anchor: list[dict], test: list[dict]) -> float | None:
    """BD-rate (%) of ``test`` against ``anchor`` over their overlapping PSNR range; None without overlap."""
    import bjontegaard as bd

    anchor, test = monotone(anchor), monotone(test)
    lo = max(min(r["psnr_db"] for r in anchor), min(r["psnr_db"] for r in test))
    hi = min(max(r["psnr_db"] for r in anchor), max(r["psnr_db"] for r in test))
    if hi <= lo:
        return None
    a = sorted(anchor, key=lambda r: r["bpp"])
    t = sorted(test, key=lambda r: r["bpp"])
    return float(bd.bd_rate([r["bpp"] for r in a], [r["psnr_db"] for r in a], [r["bpp"] for r in t],
                            [r["psnr_db"] for r in t], method="pchip", require_matching_points=False))


def below_curve(anchor: list[dict], test: list[dict]) -> list[int]:
    """Qualities of ``test`` whose PSNR is under ``anchor``'s curve (linear in log-rate) at the same bpp."""
    a = sorted(anchor, key=lambda r: r["bpp"])
    rates, quality = np.log([r["bpp"] for r in a]), [r["psnr_db"] for r in a]
    return [r["quality"] for r in test
            if a[0]["bpp"] <= r["bpp"] <= a[-1]["bpp"] and r["psnr_db"] < np.interp(np.log(r["bpp"]), rates, quality)]


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
