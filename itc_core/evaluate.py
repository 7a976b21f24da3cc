"""Dataset runs that the notebooks and benchmarks share.

``caption_rows`` is the caption-coding study of notebook 01 and
``benchmarks/caption_bits.py``: for each tiny-world scene, the LMM's caption,
its bits under every method, and the bits of ``lmm-ac`` given the LIC's
reconstruction at each rate point. ``selection_rows`` / ``selection_summary``
compare the encoder's caption-selection modes (notebook 01,
``benchmarks/caption_quality.py``): which caption each mode would code, and
what it costs.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .caption_codec import LM_METHODS, METHODS, compress_caption
from .captioner import caption_candidates, generation_kwargs, pick_caption
from .tinyworld import caption_accuracy, sample

__all__ = ["caption_rows", "selection_rows", "selection_summary", "SELECTION_MODES"]

# (mode, beam candidates N) compared by default: the paper's greedy caption and the two selections at N = 4 and 8.
SELECTION_MODES = (("greedy", 1), ("rerank", 4), ("rerank", 8), ("rate-aware", 4), ("rate-aware", 8))


def caption_rows(codec, seeds, methods=METHODS, progress: bool = True, select: str | None = None) -> list[dict]:
    """One dict per scene: ``truth``, ``caption`` (the LMM's), ``select`` (how it was chosen), ``exact``, ``chars``,
    ``bits_<method>``, ``nll_<method>``, and ``bits_lmm-ac_q<q>`` / ``nll_lmm-ac_q<q>`` for every LIC rate point.

    ``bits_lmm-ac`` is at the preset's default quality. Bits are real payload bits. ``select``: the
    caption selection mode (default: the preset's ``caption.select``).
    """
    qualities = codec.config.image_codec.qualities
    default = codec.config.image_codec.quality
    rows = []
    for seed in tqdm(list(seeds), desc="captions", disable=not progress):
        image, truth = sample(seed)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        choice = codec.choose_caption(image, recon[default], select)
        caption = choice.text
        row = {"seed": seed, "truth": truth, "caption": caption, "select": choice.describe(), "exact": caption == truth,
               "chars": len(caption)}
        for method in methods:
            lm = codec.lmm if method in LM_METHODS else None
            p = compress_caption(caption, method, lm, recon[default])
            row[f"bits_{method}"], row[f"nll_{method}"] = p.bits, p.nll_bits
        for q in qualities:
            p = compress_caption(caption, "lmm-ac", codec.lmm, recon[q])
            row[f"bits_lmm-ac_q{q}"], row[f"nll_lmm-ac_q{q}"] = p.bits, p.nll_bits
        rows.append(row)
    return rows


def selection_rows(codec, seeds, modes=SELECTION_MODES, quality: int | None = None, progress: bool = True) -> list[dict]:
    """One dict per scene and (mode, N): the caption that mode codes, whether it is exact, its real ``lmm-ac``
    bits given the reconstruction at ``quality`` (default: the lowest rate point) and the candidates seen.

    Candidates are made once per N and shared by the modes, exactly as ``captioner.select_caption`` makes them.
    """
    cfg = codec.config.caption
    kwargs = generation_kwargs(cfg)
    quality = min(codec.config.image_codec.qualities) if quality is None else quality
    rows = []
    for seed in tqdm(list(seeds), desc="selection", disable=not progress):
        image, truth = sample(seed)
        recon = codec.reconstruct(image, quality)
        bits: dict[str, int] = {}

        def bits_of(text: str) -> int:
            if text not in bits:
                bits[text] = compress_caption(text, "lmm-ac", codec.lmm, recon).bits
            return bits[text]
        for n in sorted({n for _, n in modes}):
            texts = caption_candidates(codec.lmm, image, n, **kwargs)
            sims = codec.clip.similarity(image, texts) if any(m != "greedy" and k == n for m, k in modes) else None
            for mode, k in modes:
                if k != n:
                    continue
                best = 0 if mode == "greedy" else pick_caption(texts, sims, mode, cfg.clip_margin, bits_of)[0]
                rows.append({"seed": seed, "mode": mode if mode == "greedy" else f"{mode} N={n}", "caption": texts[best],
                             "exact": texts[best] == truth, "bits": bits_of(texts[best]), "candidates": len(texts)})
    return rows


def selection_summary(rows: list[dict]) -> dict[str, dict]:
    """Per mode: exact and per-attribute accuracy (``caption_accuracy``), ``mean_bits`` and ``mean_candidates``."""
    out = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        mine = [r for r in rows if r["mode"] == mode]
        out[mode] = {**caption_accuracy([r["caption"] for r in mine], [r["seed"] for r in mine]),
                     "mean_bits": float(np.mean([r["bits"] for r in mine])),
                     "mean_candidates": float(np.mean([r["candidates"] for r in mine]))}
    return out
