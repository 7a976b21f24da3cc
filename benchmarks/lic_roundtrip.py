"""LIC round trip on tiny-world test scenes: real vs estimated bits per latent, PSNR, container overhead, timings.

    python benchmarks/lic_roundtrip.py [--scenes 20] [--preset tiny] [--json out.json]

Every scene goes through the whole file path (``ImageTextCodec.encode`` → ``.itc`` bytes → ``decode``);
bits are counted from the real bytes; the split by latent (z, y) is the coder's own accounting of the one
stream, and the flush of that stream ("termination") is reported apart. Prints a table; this is a
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from itc_core.codec import ImageTextCodec
from itc_core.data import image_to_tensor
from itc_core.metrics import psnr
from itc_core.tinyworld import sample, split_seeds


def run(preset: str, n_scenes: int) -> list[dict]:
    codec = ImageTextCodec.from_preset(preset)
    seeds = split_seeds("test", n_scenes)
    rows = []
    for q in codec.config.image_codec.qualities:
        codec.image_codec(q)  # load outside the timings
        real, est, term, overhead, psnrs, t_enc, t_dec, fails = [], [], [], [], [], [], [], 0
        names = codec.image_codec(q).latent_names
        for seed in seeds:
            image, _ = sample(seed)
            t0 = time.perf_counter()
            result = codec.encode(image, q)
            t1 = time.perf_counter()
            decoded = codec.decode(result.data, restore=False)
            t2 = time.perf_counter()
            fails += decoded.reconstruction.tobytes() != result.reconstruction.tobytes()
            real.append([result.bits[name] for name in names])
            term.append(result.bits["termination"])
            est.append(codec.image_codec(q).estimate_bits(image_to_tensor(image)))
            overhead.append((result.bits["header"] + result.bits["check"]) / 8)
            psnrs.append(psnr(image_to_tensor(image), image_to_tensor(decoded.reconstruction)))
            t_enc.append(t1 - t0)
            t_dec.append(t2 - t1)
        real, est = np.array(real, float), np.array(est, float)
        pixels = result.width * result.height
        rows.append({
            "quality": q,
            "scenes": n_scenes,
            "bpp_file": float((real.sum(1) + np.array(term) + 8 * np.array(overhead)).mean() / pixels),
            "bpp_payload": float((real.sum(1) + np.array(term)).mean() / pixels),
            "termination_bits": float(np.mean(term)),
            "bpp_estimated": float(est.sum(1).mean() / pixels),
            "real_bits": dict(zip(names, real.mean(0).round(1).tolist())),
            "estimated_bits": dict(zip(names, est.mean(0).round(1).tolist())),
            "max_excess_bits": dict(zip(names, (real - est).max(0).round(1).tolist())),
            "within_2pct_plus_2_bytes": bool(np.all(real.sum(1) + np.array(term) <= 1.02 * est.sum(1) + 16)),
            "overhead_bytes": float(np.mean(overhead)),
            "psnr_db": float(np.mean(psnrs)),
            "encode_ms": 1000 * float(np.median(t_enc)),
            "decode_ms": 1000 * float(np.median(t_dec)),
            "decoder_mismatches": fails,
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(args.preset, args.scenes)
    print(f"{args.preset}: {args.scenes} test scenes (64x64), means per scene; coded bits per latent y / z "
          "(then the stream's termination)")
    print(f"{'q':>2} {'bpp file':>9} {'bpp pay':>8} {'bpp est':>8} {'coded bits y/z':>15} {'est bits y/z':>15} "
          f"{'max excess':>12} {'term':>5} {'2%+2B':>6} {'ovh B':>5} {'PSNR':>6} {'enc ms':>7} {'dec ms':>7} {'mism':>4}")
    for r in rows:
        rb, eb, xb = (" / ".join(f"{v:g}" for v in r[k].values()) for k in ("real_bits", "estimated_bits", "max_excess_bits"))
        print(f"{r['quality']:>2} {r['bpp_file']:9.4f} {r['bpp_payload']:8.4f} {r['bpp_estimated']:8.4f} {rb:>15} {eb:>15} "
              f"{xb:>12} {r['termination_bits']:5.1f} {str(r['within_2pct_plus_2_bytes']):>6} {r['overhead_bytes']:5.1f} "
              f"{r['psnr_db']:6.2f} "
              f"{r['encode_ms']:7.1f} {r['decode_ms']:7.1f} {r['decoder_mismatches']:>4}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
