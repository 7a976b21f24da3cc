"""Caption quality benchmark: the LMM's captioning accuracy, and what each caption-selection mode buys.

    python benchmarks/caption_quality.py [--scenes 1000] [--select-scenes 1000] [--json out.json]

1. Accuracy: greedy captions (with the preset's length limit and repetition
   guard) of held-out val scenes: the originals, and the LIC reconstruction at
   every rate point (real compress/decompress round trips), judged against the
   scene's true caption (exact match and per attribute, ``caption_accuracy``).
2. Selection: for each mode of ``caption.select`` and each number of beam
   candidates N, the exact accuracy of the caption the encoder would code and
   its mean real ``lmm-ac`` bits given the reconstruction at the lowest rate.

Prints tables; this is a benchmark, not a test. The figures depend on the
shipped LMM and CLIP, so rerun it after retraining either.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from itc_core.caption_codec import compress_caption
from itc_core.captioner import caption_candidates, generation_kwargs, pick_caption
from itc_core.codec import ImageTextCodec
from itc_core.tinyworld import caption_accuracy, sample, split_seeds
from itc_core.tinyworld.train_lmm import generate_captions

ATTRIBUTES = ("exact", "shape", "colour", "size", "position", "count", "background", "pattern")


def accuracy_table(codec: ImageTextCodec, n: int) -> dict:
    """Greedy captioning accuracy on ``n`` val originals and on their reconstructions at each rate point."""
    lm, kwargs = codec.lmm, generation_kwargs(codec.config.caption)
    seeds = split_seeds("val", n)
    originals = [sample(s)[0] for s in seeds]
    sources = {"original": originals}
    for q in codec.config.image_codec.qualities:
        sources[f"lic_q{q}"] = [codec.reconstruct(im, q) for im in tqdm(originals, desc=f"LIC q{q}", mininterval=5)]
    table = {}
    for name, images in sources.items():
        pixels = np.stack([np.asarray(im.convert("RGB")) for im in images])
        texts = generate_captions(lm.model, lm.processor, pixels, **dict(kwargs))
        table[name] = caption_accuracy(texts, seeds)
    return table


def selection_table(codec: ImageTextCodec, n: int, beams=(2, 4, 8), rate_aware_beams=(4, 8)) -> dict:
    """Exact accuracy and mean lmm-ac bits (lowest-rate context) of the caption each selection mode keeps."""
    cfg = codec.config.caption
    lm, clip, kwargs = codec.lmm, codec.clip, generation_kwargs(cfg)
    low = min(codec.config.image_codec.qualities)
    modes = [("greedy", 1)] + [("rerank", b) for b in beams] + [("rate-aware", b) for b in rate_aware_beams]
    chosen = {m: [] for m in modes}
    bits = {m: [] for m in modes}
    pool = {m: [] for m in modes}
    seeds = split_seeds("val", n)
    t0 = time.time()
    for seed in tqdm(seeds, desc="selection", mininterval=5):
        image, _ = sample(seed)
        recon = codec.reconstruct(image, low)
        cache: dict[str, int] = {}

        def bits_of(text: str) -> int:
            if text not in cache:
                cache[text] = compress_caption(text, "lmm-ac", lm, recon).bits
            return cache[text]
        for n_beams in sorted({b for _, b in modes}):
            texts = caption_candidates(lm, image, n_beams, **kwargs)
            sims = clip.similarity(image, texts) if n_beams > 1 else None
            for mode, b in modes:
                if b != n_beams:
                    continue
                best = 0 if mode == "greedy" else pick_caption(texts, sims, mode, cfg.clip_margin, bits_of)[0]
                chosen[(mode, b)].append(texts[best])
                bits[(mode, b)].append(bits_of(texts[best]))
                pool[(mode, b)].append(len(texts))
    out = {}
    for (mode, b) in modes:
        key = mode if mode == "greedy" else f"{mode} N={b}"
        out[key] = {**caption_accuracy(chosen[(mode, b)], seeds), "mean_lmm_ac_bits": float(np.mean(bits[(mode, b)])),
                    "mean_candidates": float(np.mean(pool[(mode, b)]))}
    out["_info"] = {"scenes": n, "context": f"lic_q{low}", "clip": cfg.clip, "clip_margin": cfg.clip_margin,
                    "seconds": round(time.time() - t0, 1)}
    return out


def _print_accuracy(table: dict, n: int) -> None:
    print(f"captioning accuracy, {n} held-out val scenes (greedy, preset guard)")
    print(f"{'image':>10} " + " ".join(f"{a:>10}" for a in ATTRIBUTES))
    for name, acc in table.items():
        print(f"{name:>10} " + " ".join(f"{100 * acc[a]:9.1f}%" for a in ATTRIBUTES))


def _print_selection(table: dict) -> None:
    info = table["_info"]
    print(f"caption selection, {info['scenes']} val originals; bits: lmm-ac given {info['context']}; "
          f"CLIP {info['clip']}, margin {info['clip_margin']}")
    print(f"{'mode':>16} {'exact':>7} {'shape':>7} {'colour':>7} {'size':>7} {'bits':>7} {'cands':>6}")
    for key, r in table.items():
        if key != "_info":
            print(f"{key:>16} {100 * r['exact']:6.1f}% {100 * r['shape']:6.1f}% {100 * r['colour']:6.1f}% "
                  f"{100 * r['size']:6.1f}% {r['mean_lmm_ac_bits']:7.1f} {r['mean_candidates']:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000, help="val scenes for the accuracy table (0: skip)")
    parser.add_argument("--select-scenes", type=int, default=1000, help="val scenes for the selection table (0: skip)")
    parser.add_argument("--beams", type=int, nargs="+", default=[2, 4, 8], help="N for rerank")
    parser.add_argument("--rate-aware-beams", type=int, nargs="+", default=[4, 8], help="N for rate-aware")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    codec = ImageTextCodec.from_preset(args.preset)
    results = {}
    if args.scenes:
        results["accuracy"] = accuracy_table(codec, args.scenes)
        _print_accuracy(results["accuracy"], args.scenes)
    if args.select_scenes:
        results["selection"] = selection_table(codec, args.select_scenes, args.beams, args.rate_aware_beams)
        _print_selection(results["selection"])
    if args.json:
        json.dump(results, open(args.json, "w"), indent=2)


if __name__ == "__main__":
    main()
