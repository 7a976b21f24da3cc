"""Caption coding benchmark: bits per method, lm-ac overhead over the model NLL, speed, and thread determinism.

    python benchmarks/caption_bits.py [--captions 1000] [--determinism 200] [--json out.json]

Captions are the true captions of held-out tiny-world test scenes; ``lmm-ac``
gets the LIC reconstruction at each rate point as context. Determinism: a
fresh process encodes with one torch thread count, fresh processes decode with
1, 2 and 4 threads (``OMP_NUM_THREADS`` and ``torch.set_num_threads``), and we
count exact captions. Prints tables; this is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from itc_core.caption_codec import LM_METHODS, METHODS, compress_caption, decompress_caption
from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import sample, split_seeds


def bits_table(codec, n: int) -> dict:
    qualities = codec.config.image_codec.qualities
    bits = {m: [] for m in METHODS}
    nll = {m: [] for m in LM_METHODS}
    by_quality = {q: [] for q in qualities}
    timing = {m: [0.0, 0.0] for m in LM_METHODS}
    for seed in split_seeds("test", n):
        image, text = sample(seed)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        for method in METHODS:
            lm = codec.lmm if method in LM_METHODS else None
            t0 = time.perf_counter()
            p = compress_caption(text, method, lm, recon[qualities[0]])
            t1 = time.perf_counter()
            assert decompress_caption(p.data, method, lm, recon[qualities[0]]) == text
            t2 = time.perf_counter()
            bits[method].append(p.bits)
            if method in LM_METHODS:
                nll[method].append(p.nll_bits)
                timing[method][0] += t1 - t0
                timing[method][1] += t2 - t1
        for q in qualities[1:]:
            by_quality[q].append(compress_caption(text, "lmm-ac", codec.lmm, recon[q]).bits)
        by_quality[qualities[0]].append(bits["lmm-ac"][-1])
    return {
        "captions": n,
        "mean_chars": float(np.mean([len(sample(s)[1]) for s in split_seeds("test", n)])),
        "mean_bits": {m: float(np.mean(v)) for m, v in bits.items()},
        "mean_nll_bits": {m: float(np.mean(v)) for m, v in nll.items()},
        "lm_ac_overhead_bits": float(np.mean(np.array(bits["lm-ac"]) - np.array(nll["lm-ac"]))),
        "lm_ac_max_bytes_when_nll_under_8_bits": max([b // 8 for b, x in zip(bits["lm-ac"], nll["lm-ac"]) if x < 8], default=None),
        "lmm_ac_bits_by_quality": {q: float(np.mean(v)) for q, v in by_quality.items()},
        "captions_per_second": {m: {"encode": n / t[0], "decode": n / t[1]} for m, t in timing.items()},
    }


def _worker(args) -> None:
    """Subprocess: encode (or decode) the captions of ``args.seeds`` with ``args.threads`` torch threads."""
    torch.set_num_threads(args.threads)
    codec = ImageTextCodec.from_preset(args.preset)
    q = codec.config.image_codec.quality
    items = json.load(open(args.io))
    for item in items:
        image, text = sample(item["seed"])
        recon = codec.reconstruct(image, q)
        if args.worker == "encode":
            item["data"] = base64.b64encode(compress_caption(text, "lmm-ac", codec.lmm, recon).data).decode()
        else:
            try:
                item[f"ok_{args.threads}"] = decompress_caption(base64.b64decode(item["data"]), "lmm-ac", codec.lmm, recon) == text
            except Exception:
                item[f"ok_{args.threads}"] = False
    json.dump(items, open(args.io, "w"))


def determinism(preset: str, n: int, encode_threads: int = 2) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        io = os.path.join(tmp, "items.json")
        json.dump([{"seed": s} for s in split_seeds("test", n, start=5000)], open(io, "w"))

        def run(worker, threads):
            env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
            subprocess.run([sys.executable, __file__, "--worker", worker, "--threads", str(threads),
                            "--io", io, "--preset", preset], check=True, env=env)
        run("encode", encode_threads)
        result = {"captions": n, "encoded_with_threads": encode_threads}
        for threads in (1, 2, 4):
            run("decode", threads)
            result[f"exact_decoded_with_{threads}_threads"] = sum(i[f"ok_{threads}"] for i in json.load(open(io)))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--captions", type=int, default=1000)
    parser.add_argument("--determinism", type=int, default=200, help="captions in the thread check (0: skip)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--worker", choices=["encode", "decode"], help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--io", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return _worker(args)
    torch.set_num_threads(1)
    codec = ImageTextCodec.from_preset(args.preset)
    results = {"bits": bits_table(codec, args.captions)} if args.captions else {}
    if args.determinism:
        results["determinism"] = determinism(args.preset, args.determinism)
    if "bits" in results:
        r = results["bits"]
        print(f"{r['captions']} held-out tiny-world captions, mean {r['mean_chars']:.1f} characters")
        print(f"{'method':>10} {'bits':>8} {'NLL bits':>9} {'enc cap/s':>10} {'dec cap/s':>10}")
        for m in METHODS:
            speed = r["captions_per_second"].get(m, {})
            print(f"{m:>10} {r['mean_bits'][m]:8.1f} {r['mean_nll_bits'].get(m, float('nan')):9.1f} "
                  f"{speed.get('encode', float('nan')):10.1f} {speed.get('decode', float('nan')):10.1f}")
        print(f"lm-ac over NLL: {r['lm_ac_overhead_bits']:.2f} bits per caption; "
              f"lm-ac / zlib = {r['mean_bits']['lm-ac'] / r['mean_bits']['zlib']:.3f}")
        print("lmm-ac bits by LIC quality (context):",
              {f"q{q}": round(b, 2) for q, b in r["lmm_ac_bits_by_quality"].items()},
              f"vs lm-ac {r['mean_bits']['lm-ac']:.2f}")
    if "determinism" in results:
        print("determinism:", results["determinism"])
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
