"""Caption coding benchmark: bits per method, lm-ac overhead over the model NLL, speed, ``auto``, and thread determinism.

    python benchmarks/caption_bits.py [--captions 1000] [--determinism 200] [--in-file 200] [--kodak CSV]
                                      [--image PHOTO] [--json out.json]

Captions are the true captions of held-out tiny-world test scenes; ``lmm-ac``
gets the LIC reconstruction at each rate point as context; ``auto`` is the
standalone payload of the fewest bytes. ``--in-file``: that many scenes coded
into whole ``.itc`` files with ``auto`` and with ``lmm-ac`` (caption bits as
the file counts them, and whether the files are byte-identical). ``--kodak``:
the captions of a CSV (the paper's LLaVA captions of Kodak, plus a free
English caption and the empty one) coded into the file of ``--image`` (default:
a test scene), every method's in-file bits against UTF-8's. Determinism: a
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

from itc_core.caption_codec import LM_METHODS, METHODS, choose_method, compress_caption, decompress_caption
from itc_core.codec import ImageTextCodec
from itc_core.data import load_image, read_captions_csv
from itc_core.tinyworld import sample, split_seeds

KODAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "reference", "kodak_llava_1.5.csv")
FREE_CAPTION = "a portrait of an officer in a dark uniform in front of a flag"  # 61 characters, no tiny-world text


def bits_table(codec, n: int) -> dict:
    qualities = codec.config.image_codec.qualities
    bits = {m: [] for m in METHODS + ("auto",)}
    nll = {m: [] for m in LM_METHODS}
    by_quality = {q: [] for q in qualities}
    timing = {m: [0.0, 0.0] for m in LM_METHODS + ("auto",)}
    picks = {}
    for seed in split_seeds("test", n):
        image, text = sample(seed)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        for method in METHODS + ("auto",):
            lm = codec.lmm if method in LM_METHODS + ("auto",) else None
            t0 = time.perf_counter()
            p = compress_caption(text, method, lm, recon[qualities[0]])
            t1 = time.perf_counter()
            assert decompress_caption(p.data, p.method, lm, recon[qualities[0]]) == text
            t2 = time.perf_counter()
            bits[method].append(p.bits)
            if method == "auto":
                picks[p.method] = picks.get(p.method, 0) + 1
            if method in LM_METHODS:
                nll[method].append(p.nll_bits)
            if method in timing:
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
        "auto_picks": picks,
    }


def in_file_table(codec, n: int) -> dict:
    """``n`` test scenes with their true captions coded into ``.itc`` files with ``auto`` and with ``lmm-ac``."""
    rows = []
    for seed in split_seeds("test", n):  # (no timing: auto reuses the LMM pass lmm-ac has just run)
        image, text = sample(seed)
        plain = codec.encode(image, caption=text, method="lmm-ac")
        auto = codec.encode(image, caption=text, method="auto")
        rows.append({"seed": seed, "lmm_ac": plain.bits["caption"], "auto": auto.bits["caption"],
                     "pick": auto.caption_payload.method, "identical": plain.data == auto.data,
                     "bytes_lmm_ac": len(plain.data), "bytes_auto": len(auto.data)})
    diff = np.array([r["auto"] - r["lmm_ac"] for r in rows])
    picks = {}
    for r in rows:
        picks[r["pick"]] = picks.get(r["pick"], 0) + 1
    return {"files": n, "mean_caption_bits_lmm_ac": float(np.mean([r["lmm_ac"] for r in rows])),
            "mean_caption_bits_auto": float(np.mean([r["auto"] for r in rows])),
            "max_abs_diff_bits": float(np.abs(diff).max()), "picks": picks,
            "identical_files": sum(r["identical"] for r in rows),
            "mean_bytes_lmm_ac": float(np.mean([r["bytes_lmm_ac"] for r in rows])),
            "mean_bytes_auto": float(np.mean([r["bytes_auto"] for r in rows]))}


def text_table(codec, captions: dict[str, str], image) -> list[dict]:
    """Each caption coded into the ``.itc`` file of ``image``: every method's in-file bits, ``auto``'s pick and file.

    ``over_utf8_bits``: the caption bits of the ``auto`` file minus 8 bits per UTF-8 byte (what the paper bills);
    ``file_over_best_bytes``: the ``auto`` file's length minus the shorter of the ``utf8`` and ``zlib`` files'.
    """
    recon = codec.reconstruct(image)
    rows = []
    for name, text in captions.items():
        auto = codec.encode(image, caption=text, method="auto")
        files = {m: len(codec.encode(image, caption=text, method=m).data) for m in ("utf8", "zlib")} if text else {}
        assert codec.decode(auto.data, restore=False).caption == (text or None)
        choice = auto.caption_payload.method_choice if auto.caption_payload else None
        bits = choice.bits if choice else choose_method(text, codec.lmm, recon).bits
        rows.append({"caption": name, "chars": len(text), "utf8_bits": 8 * len(text.encode("utf-8")),
                     "bits": bits, "pick": auto.caption_payload.method if auto.caption_payload else None,
                     "auto_bits": auto.bits["caption"], "over_utf8_bits": auto.bits["caption"] - 8 * len(text.encode()),
                     "file_bytes": len(auto.data),
                     "file_over_best_bytes": len(auto.data) - min(files.values()) if files else None,
                     "notes": auto.notes})
    return rows


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
    parser.add_argument("--in-file", type=int, default=200,
                        help="scenes coded into .itc files, auto vs lmm-ac (0: skip)")
    parser.add_argument("--kodak", default=KODAK if os.path.exists(KODAK) else None,
                        help="a captions CSV (the paper's format) to code into a file with auto ('': skip)")
    parser.add_argument("--image", help="the image whose file the --kodak captions go into (default: a test scene)")
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
    if args.in_file:
        results["in_file"] = in_file_table(codec, args.in_file)
    if args.kodak:
        captions = dict(read_captions_csv(args.kodak), free=FREE_CAPTION, empty="")
        image = load_image(args.image)[0] if args.image else sample(split_seeds("test", 1)[0])[0]
        results["texts"] = text_table(codec, captions, image)
    if args.determinism:
        results["determinism"] = determinism(args.preset, args.determinism)
    if "bits" in results:
        r = results["bits"]
        print(f"{r['captions']} held-out tiny-world captions, mean {r['mean_chars']:.1f} characters")
        print(f"{'method':>10} {'bits':>8} {'NLL bits':>9} {'enc cap/s':>10} {'dec cap/s':>10}")
        for m in METHODS + ("auto",):
            speed = r["captions_per_second"].get(m, {})
            print(f"{m:>10} {r['mean_bits'][m]:8.1f} {r['mean_nll_bits'].get(m, float('nan')):9.1f} "
                  f"{speed.get('encode', float('nan')):10.1f} {speed.get('decode', float('nan')):10.1f}")
        print(f"lm-ac over NLL: {r['lm_ac_overhead_bits']:.2f} bits per caption; "
              f"lm-ac / zlib = {r['mean_bits']['lm-ac'] / r['mean_bits']['zlib']:.3f}")
        print("lmm-ac bits by LIC quality (context):",
              {f"q{q}": round(b, 2) for q, b in r["lmm_ac_bits_by_quality"].items()},
              f"vs lm-ac {r['mean_bits']['lm-ac']:.2f}")
        print("auto (standalone) picked:", r["auto_picks"])
    if "in_file" in results:
        r = results["in_file"]
        print(f"{r['files']} .itc files: caption bits lmm-ac {r['mean_caption_bits_lmm_ac']:.3f}, auto "
              f"{r['mean_caption_bits_auto']:.3f} (max |diff| {r['max_abs_diff_bits']:.3f}); auto picked {r['picks']}; "
              f"{r['identical_files']} byte-identical files, mean {r['mean_bytes_auto']:.2f} bytes")
    if "texts" in results:
        print(f"{'caption':>10} {'chars':>5} {'utf8':>6} {'auto':>8} {'pick':>8} {'over utf8':>9} {'file-best':>9}  "
              "bits by method (in the file)")
        for r in results["texts"]:
            costs = " ".join(f"{m} {b:.0f}" for m, b in sorted(r["bits"].items(), key=lambda kv: kv[1]))
            print(f"{r['caption'][:10]:>10} {r['chars']:5d} {r['utf8_bits']:6d} {r['auto_bits']:8.1f} {r['pick']!s:>8} "
                  f"{r['over_utf8_bits']:9.1f} {r['file_over_best_bytes']!s:>9}  {costs}")
        over = [r["over_utf8_bits"] for r in results["texts"] if r["chars"]]
        print(f"auto over UTF-8: max {max(over):.1f} bits; file over the shorter utf8/zlib file: max "
              f"{max(r['file_over_best_bytes'] for r in results['texts'] if r['chars'])} bytes")
    if "determinism" in results:
        print("determinism:", results["determinism"])
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
