"""The semantic and perceptual terms of the fine-tuning loss (see :mod:`itc_core.losses`).

Each term is a small frozen module ``term(x_hat, x, captions) -> scalar`` (lower is better):

- ``lpips``: LPIPS through the ``lpips`` package (``alex``/``vgg``, hub presets), or, in the
  tiny world, an LPIPS-style distance on the CLIP vision tower's token features
  (unit-normalised per token, squared differences, averaged over tokens and layers).
- ``clip_iqa``: CLIP-IQA as torchmetrics defines it: the softmax of 100·cosine against the
  antonym prompts "Good photo." / "Bad photo."; the term is 1 − P(good).
- ``clip_i2t``: 1 − cosine(CLIP image embedding of x̂, CLIP text embedding of its caption).

Images are resized and normalised for CLIP with differentiable torch ops (an HF
image processor would leave the graph). Weights that cannot be loaded raise
:class:`~itc_core.errors.WeightsError` naming them; a term never drops out silently.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .errors import WeightsError
from .tinyworld.train_clip import CLIP_MEAN, CLIP_STD, text_batch

__all__ = ["ClipFeatures", "LpipsStyle", "LpipsPackage", "ClipIqa", "ClipI2T", "build_semantic_terms", "load_clip"]

IQA_PROMPTS = ("Good photo.", "Bad photo.")


def load_clip(ref: str):
    """A frozen ``CLIPModel`` and its tokenizer from a hub id or a folder (``tiny/clip`` is under data/)."""
    from transformers import AutoTokenizer

    from .captioner import clip_model
    from .config import resolve_model

    path = resolve_model(ref)
    try:
        model = clip_model(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise WeightsError(f"CLIP weights {ref!r} ({path}) could not be loaded for the loss: {err}") from None
    model.eval().requires_grad_(False)
    return model, tokenizer


def _embedding(out) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipFeatures(nn.Module):
    """Differentiable CLIP inputs and embeddings for [0, 1] images; text embeddings cached per string."""

    def __init__(self, model, tokenizer, max_text_tokens: int = 77):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        self.size = model.config.vision_config.image_size
        self.register_buffer("mean", torch.tensor(CLIP_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD)[None, :, None, None], persistent=False)
        self.max_text_tokens = min(max_text_tokens, model.config.text_config.max_position_embeddings)
        self._text_cache: dict[str, torch.Tensor] = {}

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    def image_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(_embedding(self.model.get_image_features(pixel_values=self.pixels(x))), dim=-1)

    def vision_layers(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.vision_model(pixel_values=self.pixels(x), output_hidden_states=True)
        return out.hidden_states[1:]

    def _tokens(self, texts: list[str]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        probe = tok("a").input_ids
        if probe and probe[-1] == tok.eos_token_id:  # a hub CLIP tokenizer adds BOS/EOS itself
            return tok(texts, padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt")
        return text_batch(tok, texts, self.max_text_tokens)  # the tiny tokenizer: EOS appended as in training

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._text_cache})
        if missing:
            tokens = {k: v.to(self.mean.device) for k, v in self._tokens(missing).items()}
            emb = F.normalize(_embedding(self.model.get_text_features(**tokens)), dim=-1)
            self._text_cache.update(zip(missing, emb))
        return torch.stack([self._text_cache[t] for t in texts])


class LpipsStyle(nn.Module):
    """LPIPS-style distance on CLIP vision-tower tokens: unit-normalised features, squared differences."""

    name = "lpips"

    def __init__(self, clip: ClipFeatures):
        super().__init__()
        self.clip = clip

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        with torch.no_grad():
            reference = self.clip.vision_layers(x)
        layers = self.clip.vision_layers(x_hat)
        dists = [(F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1).mean()
                 for a, b in zip(layers, reference)]
        return torch.stack(dists).mean()


class LpipsPackage(nn.Module):
    """LPIPS through the ``lpips`` package (its backbone comes from torchvision's download cache)."""

    name = "lpips"

    def __init__(self, net: str):
        super().__init__()
        import lpips

        try:
            self.lpips = lpips.LPIPS(net=net, verbose=False)
        except Exception as err:  # URLError, RuntimeError, ...: torchvision could not provide the backbone
            raise WeightsError(f"LPIPS-{net}: backbone weights unavailable ({type(err).__name__}: {err}); they are "
                               "fetched once by torchvision into ~/.cache/torch/hub/checkpoints") from None
        self.lpips.eval().requires_grad_(False)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        return self.lpips(x_hat, x, normalize=True).mean()


class ClipIqa(nn.Module):
    """1 − CLIP-IQA: P("Good photo.") against "Bad photo." from 100·cosine, as torchmetrics computes it."""

    name = "clip_iqa"

    def __init__(self, clip: ClipFeatures, prompts: tuple[str, str] = IQA_PROMPTS):
        super().__init__()
        self.clip, self.prompts = clip, list(prompts)

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        anchors = self.clip.text_embeddings(self.prompts)
        probs = (100 * self.clip.image_embeddings(x_hat) @ anchors.T).softmax(-1)
        return (1 - probs[:, 0]).mean()


class ClipI2T(nn.Module):
    """1 − cosine similarity between x̂'s CLIP image embedding and its caption's text embedding."""

    name = "clip_i2t"

    def __init__(self, clip: ClipFeatures):
        super().__init__()
        self.clip = clip

    def forward(self, x_hat: torch.Tensor, x: torch.Tensor, captions=None) -> torch.Tensor:
        if not captions or any(c is None or c == "" for c in captions):
            raise ValueError("the clip_i2t term needs a caption for every training image (data without captions?)")
        text = self.clip.text_embeddings(list(captions))
        return (1 - (self.clip.image_embeddings(x_hat) * text).sum(-1)).mean()


def build_semantic_terms(names: list[str], clip: str | None, lpips: str = "clip") -> dict[str, nn.Module]:
    """The term modules ``names`` (any of lpips, clip_iqa, clip_i2t) over the CLIP ``clip`` (hub id or folder)."""
    needs_clip = {"clip_iqa", "clip_i2t"} & set(names) or ("lpips" in names and lpips == "clip")
    features = None
    if needs_clip:
        if not clip:
            raise WeightsError(f"loss terms {sorted(names)} need a CLIP: set loss.clip (e.g. tiny/clip)")
        features = ClipFeatures(*load_clip(clip))
    terms: dict[str, nn.Module] = {}
    for name in names:
        if name == "lpips":
            terms[name] = LpipsStyle(features) if lpips == "clip" else LpipsPackage(lpips)
        elif name == "clip_iqa":
            terms[name] = ClipIqa(features)
        elif name == "clip_i2t":
            terms[name] = ClipI2T(features)
        else:
            raise ValueError(f"unknown semantic term {name!r}")
    return terms
