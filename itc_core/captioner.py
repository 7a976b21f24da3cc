"""Captions: written by an LMM (any transformers image-text-to-text model), read from a CSV, or given by the user.

    lm = load_lmm(load_config("tiny").caption)        # model + processor + prompt, shared with the caption coder
    caption_image(lm, image, max_new_tokens=48)        # greedy, like the paper
    choice = select_caption(lm, image, "rerank", 4, clip=load_clip("tiny/clip"))   # which caption to code
    CsvCaptions("kodak_llava_1.5.csv")["kodim01.png"]  # the paper repo's precomputed LLaVA captions, byte-exact

Selection (``SELECT_MODES``, beyond the paper, which codes the greedy caption):
``greedy``; ``rerank``: beam search gives N candidates (the greedy caption is
one more), and the one with the best ranking score wins: the CLIP's cosine
similarity with the *original* image, plus (``caption.rank_lm_weight`` > 0)
the LMM's own log-likelihood of the candidate given that image, divided by
the CLIP's logit scale (weight 1: the product of the two models' distributions
over the candidates); ``rate-aware``: among candidates within a margin of the
best score, the one with the fewest coded bits given the reconstruction.
Only the encoder chooses: the decoder decodes whatever text was coded.
Generation takes the preset's repetition guard (``no_adjacent_repeat``: no
phrase right after itself; also transformers' ``no_repeat_ngram_size`` and
``repetition_penalty``) and length limit, so an image unlike anything the LMM
saw cannot make it loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from .caption_codec import AUTO, LM_METHODS, NextTokenModel, compress_caption
from .config import SELECT_MODES, CaptionConfig, resolve_model
from .data import read_captions_csv
from .errors import ConfigError, WeightsError

__all__ = ["load_lmm", "caption_image", "build_prompt", "CsvCaptions", "SELECT_MODES", "generation_kwargs",
           "NoAdjacentRepeat", "guard_processors",
           "caption_candidates", "ClipScorer", "clip_model", "load_clip", "CaptionChoice", "ranking_scores", "pick_caption",
           "select_caption"]


def build_prompt(processor, cfg: CaptionConfig) -> str:
    """``cfg.prompt`` as is, or ``cfg.question`` put through the processor's chat template with one image."""
    if cfg.prompt:
        return cfg.prompt
    if not getattr(processor, "chat_template", None):
        raise ConfigError("caption.question needs a processor with a chat template; set caption.prompt instead")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": cfg.question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def load_lmm(cfg: CaptionConfig) -> NextTokenModel:
    """Load the LMM of ``cfg`` (local folder or hub id) as a :class:`NextTokenModel`; missing weights say where to get them."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if not cfg.lmm:
        raise ConfigError("this preset has no LMM (caption.lmm is null): give a caption with --caption")
    ref = resolve_model(cfg.lmm)
    try:
        processor = AutoProcessor.from_pretrained(ref)
        model = AutoModelForImageTextToText.from_pretrained(ref, dtype=torch.float32)
    except Exception as err:  # OSError (missing), ValueError (not an image-text model), SafetensorError (damaged)
        hint = ("`itc tiny-zoo --only lmm` trains it" if cfg.lmm.startswith("tiny/")
                else "it downloads from the Hugging Face hub once (needs the internet; HF_HUB_OFFLINE must be unset)")
        raise WeightsError(f"cannot load LMM {cfg.lmm!r} from {ref} ({str(err).splitlines()[0]}); {hint}") from None
    return NextTokenModel(model, processor, build_prompt(processor, cfg))


class NoAdjacentRepeat(LogitsProcessor):
    """Forbid any token that would make a phrase of up to ``max_tokens`` tokens follow itself
    ("checkered checkered", "on a on a"), counting only tokens after the first ``prompt_length``.

    A stronger loop stop than ``no_repeat_ngram_size`` (which lets a word repeat n times and
    forbids repeats far apart, such as "at the" twice in one scene) and, unlike a repetition
    penalty, neutral for captions that name a colour or a shape twice.
    """

    def __init__(self, max_tokens: int, prompt_length: int):
        self.max_tokens = max_tokens
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            n = len(ids)
            for m in range(1, min(self.max_tokens, (n + 1) // 2) + 1):
                # the next token t completes X X with |X| = m when ids[n-2m+1 : n-m] == ids[n-m+1 : n] and t == ids[n-m]
                if ids[n - 2 * m + 1: n - m] == ids[n - m + 1: n]:
                    scores[row, ids[n - m]] = -float("inf")
        return scores


def generation_kwargs(cfg: CaptionConfig) -> dict:
    """``generate`` keywords of the preset: length limit and repetition guard (off ones left out).

    ``no_adjacent_repeat`` is not a ``generate`` keyword: :func:`caption_image` turns it into a
    :class:`NoAdjacentRepeat` logits processor.
    """
    kwargs = {"max_new_tokens": cfg.max_new_tokens}
    if cfg.no_adjacent_repeat:
        kwargs["no_adjacent_repeat"] = cfg.no_adjacent_repeat
    if cfg.no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = cfg.no_repeat_ngram_size
    if cfg.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = float(cfg.repetition_penalty)
    return kwargs


def guard_processors(no_adjacent_repeat: int | None, prompt_length: int) -> LogitsProcessorList:
    """The logits processors of the repetition guard (empty when ``no_adjacent_repeat`` is 0 or None)."""
    return LogitsProcessorList([NoAdjacentRepeat(no_adjacent_repeat, prompt_length)] if no_adjacent_repeat else [])


@torch.no_grad()
def _generate(lm: NextTokenModel, image: Image.Image, no_adjacent_repeat: int | None = None, **kwargs) -> list[str]:
    inputs = lm.processor(images=image.convert("RGB"), text=lm.prompt, return_tensors="pt")
    guard = guard_processors(no_adjacent_repeat, inputs["input_ids"].shape[1])
    out = lm.model.generate(**inputs, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id or lm.eos,
                            logits_processor=guard, **kwargs)
    texts = lm.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    return [t.strip() for t in texts]


def caption_image(lm: NextTokenModel, image: Image.Image, max_new_tokens: int = 48, **generate_kwargs) -> str:
    """The LMM's greedy caption of ``image`` (special tokens dropped, surrounding whitespace stripped).

    ``generate_kwargs`` add e.g. the repetition guard of :func:`generation_kwargs`.
    """
    return _generate(lm, image, max_new_tokens=max_new_tokens, **generate_kwargs)[0]


def caption_candidates(lm: NextTokenModel, image: Image.Image, n: int, max_new_tokens: int = 48,
                       **generate_kwargs) -> list[str]:
    """The greedy caption, then the ``n`` beams of a width-``n`` beam search: distinct, non-empty, in that order."""
    texts = _generate(lm, image, max_new_tokens=max_new_tokens, **generate_kwargs)
    if n > 1:
        texts += _generate(lm, image, max_new_tokens=max_new_tokens, num_beams=n, num_return_sequences=n,
                           **generate_kwargs)
    return list(dict.fromkeys(t for t in texts if t))


class ClipScorer:
    """Cosine similarity between an image and captions under a transformers ``CLIPModel``."""

    def __init__(self, model, tokenizer, image_processor):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.max_tokens = model.config.text_config.max_position_embeddings
        self.logit_scale = float(model.logit_scale.detach().exp())  # CLIP's softmax temperature over texts: scale · cosine

    @classmethod
    def from_pretrained(cls, ref: str) -> "ClipScorer":
        """Load a CLIP folder or hub id; a folder without an image-processor config gets CLIP's own preprocessing."""
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPImageProcessor, CLIPModel

        model = clip_model(ref)
        try:
            images = AutoImageProcessor.from_pretrained(ref)
        except OSError:  # the tiny CLIP ships weights and tokenizer only; its recipe normalises like OpenAI's CLIP
            size = model.config.vision_config.image_size
            images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        return cls(model, AutoTokenizer.from_pretrained(ref), images)

    def _text_inputs(self, texts: list[str]) -> dict[str, torch.Tensor]:
        eos = self.tokenizer.eos_token_id
        rows = []
        for text in texts:
            ids = self.tokenizer(text, truncation=True, max_length=self.max_tokens)["input_ids"]
            rows.append(ids if ids and ids[-1] == eos else ids[: self.max_tokens - 1] + [eos])  # CLIP pools at EOS
        width = max(map(len, rows))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos
        ids = torch.full((len(rows), width), pad)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        return {"input_ids": ids, "attention_mask": mask}

    @torch.no_grad()
    def image_features(self, images: list[Image.Image]) -> torch.Tensor:
        """(N, D) unit-norm CLIP embeddings of ``images`` (one batch)."""
        pixels = self.image_processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        return torch.nn.functional.normalize(_pooled(self.model.get_image_features(pixel_values=pixels)), dim=-1)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """(N, D) unit-norm CLIP embeddings of ``texts`` (one batch)."""
        return torch.nn.functional.normalize(_pooled(self.model.get_text_features(**self._text_inputs(texts))), dim=-1)

    def similarity(self, image: Image.Image, texts: list[str]) -> np.ndarray:
        """(len(texts),) cosine similarities of ``image`` with each text."""
        return self.text_features(texts).matmul(self.image_features([image])[0]).numpy()


def clip_model(ref: str):
    """``CLIPModel.from_pretrained(ref)`` in float32, refusing what is not a whole CLIP: transformers would load
    another model type's folder (e.g. an LMM) with every CLIP weight missing, i.e. random."""
    from transformers import AutoConfig, CLIPModel

    kind = AutoConfig.from_pretrained(ref).model_type
    if kind != "clip":
        raise ValueError(f"it holds a {kind!r} model, not a CLIP")
    model, info = CLIPModel.from_pretrained(ref, dtype=torch.float32, output_loading_info=True)
    if info["missing_keys"]:
        raise ValueError(f"{len(info['missing_keys'])} CLIP weights are missing, e.g. {sorted(info['missing_keys'])[0]}")
    return model


def _pooled(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5.x returns output objects


def load_clip(ref: str | None) -> ClipScorer:
    """A CLIP (``caption.clip`` or ``caption.rank_clip``) as a :class:`ClipScorer`; missing weights say how to get
    them."""
    if not ref:
        raise ConfigError("this preset has no CLIP (caption.clip and caption.rank_clip are null): caption selection "
                          "needs one")
    path = resolve_model(ref)
    try:
        return ClipScorer.from_pretrained(path)
    except Exception as err:  # OSError (missing), ValueError (not a CLIP), SafetensorError (damaged)
        hint = (f"`itc tiny-zoo --only {ref.removeprefix('tiny/')}` trains it" if ref.startswith("tiny/")
                else "it downloads from the Hugging Face hub once (needs the internet)")
        raise WeightsError(f"cannot load CLIP {ref!r} from {path} ({str(err).splitlines()[0]}); {hint}") from None


@dataclass
class CaptionChoice:
    """The caption chosen for coding and how: ``candidates`` in generation order, with their CLIP similarity
    (``rerank``, ``rate-aware``), the LMM's log-likelihood given the original in nats (when the ranking
    weighs it, else None), the ranking ``score`` and coded bits (``rate-aware``, candidates inside the
    margin only, else None)."""

    text: str
    mode: str
    candidates: list[str]
    similarity: list[float] | None = None
    bits: list[int | None] | None = None
    log_likelihood: list[float] | None = None
    score: list[float] | None = None

    def describe(self) -> str:
        """E.g. ``greedy``, ``rerank of 5 candidates`` or ``rerank of 5 candidates (CLIP × LMM)``: the mode as the
        CLI and notebooks show it."""
        if self.mode == "greedy":
            return self.mode
        return f"{self.mode} of {len(self.candidates)} candidates" + (" (CLIP × LMM)" if self.log_likelihood else "")


def ranking_scores(lm: NextTokenModel, clip: ClipScorer, image: Image.Image, texts: list[str],
                   lm_weight: float = 0.0) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """(CLIP cosine similarities, LMM log-likelihoods in nats or None, ranking scores) of ``texts`` for ``image``.

    The score is ``cosine + lm_weight · ln p_LMM(text | image) / clip.logit_scale``: in cosine units, so the
    margin of ``rate-aware`` keeps its meaning; at weight 1 its argmax is that of the product of CLIP's softmax
    over the candidates and the LMM's probability. A weak CLIP (the tiny world's cannot bind shapes to
    objects well) then only overrules the LMM where the LMM itself hesitates.
    """
    sims = clip.similarity(image, texts)
    if not lm_weight:
        return sims, None, sims
    logp = np.array([lm.log_likelihood(image, t) for t in texts])
    return sims, logp, sims + lm_weight * logp / clip.logit_scale


def pick_caption(texts: list[str], score: np.ndarray, mode: str, margin: float = 0.01,
                 bits_of=None) -> tuple[int, list[int | None] | None]:
    """Index of the caption ``mode`` keeps among ``texts`` with ranking ``score`` (:func:`ranking_scores`),
    and the bits it looked at.

    ``rerank``: the best score. ``rate-aware``: ``bits_of(text)`` (coded bits) for the texts within
    ``margin`` of the best score, and the fewest bits (ties: the better score) win.
    """
    if mode == "rerank":
        return int(np.argmax(score)), None
    if mode != "rate-aware":
        raise ConfigError(f"pick_caption ranks candidates for rerank or rate-aware, not {mode!r}")
    bits = [bits_of(t) if s >= score.max() - margin else None for t, s in zip(texts, score)]
    return min((b, -s, i) for i, (b, s) in enumerate(zip(bits, score)) if b is not None)[2], bits


def select_caption(lm: NextTokenModel, image: Image.Image, mode: str = "greedy", candidates: int = 4,
                   clip: ClipScorer | None = None, reconstruction: Image.Image | None = None,
                   method: str = "lmm-ac", margin: float = 0.01, lm_weight: float = 0.0,
                   **generate_kwargs) -> CaptionChoice:
    """Choose the caption of ``image`` (the original) to code, by ``mode`` (see the module docstring).

    ``lm_weight`` weighs the LMM's log-likelihood in the ranking score (:func:`ranking_scores`).
    ``rate-aware`` codes each candidate inside the margin with ``method`` given ``reconstruction``
    (the decoder's context) and keeps the fewest real bits (``auto``: its payload's, the fewest of every method;
    ``ImageTextCodec.choose_caption`` counts ``lmm-ac``'s instead, one LMM pass a candidate).
    """
    if mode not in SELECT_MODES:
        raise ConfigError(f"unknown caption selection {mode!r}; valid: {', '.join(SELECT_MODES)}")
    if mode == "greedy":
        text = caption_image(lm, image, **generate_kwargs)
        return CaptionChoice(text, mode, [text])
    if clip is None:
        raise ConfigError(f"caption selection {mode} needs a CLIP (caption.rank_clip or caption.clip)")
    if mode == "rate-aware" and method == "lmm-ac" and reconstruction is None:
        raise ConfigError("rate-aware caption selection with lmm-ac needs the reconstruction")
    texts = caption_candidates(lm, image, candidates, **generate_kwargs)
    if not texts:
        return CaptionChoice("", mode, [""])
    sims, logp, score = ranking_scores(lm, clip, image, texts, lm_weight)
    coder = lm if method in LM_METHODS + (AUTO,) else None
    best, bits = pick_caption(texts, score, mode, margin,
                              lambda t: compress_caption(t, method, coder, reconstruction).bits)
    return CaptionChoice(texts[best], mode, texts, sims.tolist(), bits,
                         None if logp is None else logp.tolist(), score.tolist())


class CsvCaptions:
    """Captions keyed by image file name, from a CSV.

    Reads the paper repository's format (``image_name`` and ``overall_description``
    columns, e.g. ``kodak_llava_1.5.csv``) or any CSV with ``image``/``file`` and
    ``caption`` columns. Text is kept byte-exact, leading spaces included.
    """

    def __init__(self, path: str | Path):
        self.captions = read_captions_csv(path)

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, image_name: str) -> str:
        key = Path(image_name).name
        for candidate in (key, Path(key).stem, Path(key).stem + ".png"):
            if candidate in self.captions:
                return self.captions[candidate]
        raise KeyError(f"no caption for {image_name!r} in the CSV")
