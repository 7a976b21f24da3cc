"""Dataset runs that the notebooks and benchmarks share.

``caption_rows`` is the caption-coding study of notebook 01 and
``benchmarks/caption_bits.py``: for each tiny-world scene, the LMM's caption,
its bits under every method, and the bits of ``lmm-ac`` given the LIC's
reconstruction at each rate point.
"""

from __future__ import annotations

from tqdm.auto import tqdm

from .caption_codec import LM_METHODS, METHODS, compress_caption
from .tinyworld import sample

__all__ = ["caption_rows"]


def caption_rows(codec, seeds, methods=METHODS, progress: bool = True) -> list[dict]:
    """One dict per scene: ``truth``, ``caption`` (the LMM's), ``exact``, ``chars``, ``bits_<method>``,
    ``nll_<method>``, and ``bits_lmm-ac_q<q>`` / ``nll_lmm-ac_q<q>`` for every LIC rate point.

    ``bits_lmm-ac`` is at the preset's default quality. Bits are real payload bits.
    """
    qualities = codec.config.image_codec.qualities
    default = codec.config.image_codec.quality
    rows = []
    for seed in tqdm(list(seeds), desc="captions", disable=not progress):
        image, truth = sample(seed)
        caption = codec.caption(image)
        recon = {q: codec.reconstruct(image, q) for q in qualities}
        row = {"seed": seed, "truth": truth, "caption": caption, "exact": caption == truth, "chars": len(caption)}
        for method in methods:
            lm = codec.lmm if method in LM_METHODS else None
            p = compress_caption(caption, method, lm, recon[default])
            row[f"bits_{method}"], row[f"nll_{method}"] = p.bits, p.nll_bits
        for q in qualities:
            p = compress_caption(caption, "lmm-ac", codec.lmm, recon[q])
            row[f"bits_lmm-ac_q{q}"], row[f"nll_lmm-ac_q{q}"] = p.bits, p.nll_bits
        rows.append(row)
    return rows
