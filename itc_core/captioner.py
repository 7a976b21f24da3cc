"""Captions: written by an LMM (any transformers image-text-to-text model), read from a CSV, or given by the user.

    lm = load_lmm(load_config("tiny").caption)        # model + processor + prompt, shared with the caption coder
    caption_image(lm, image, max_new_tokens=48)        # greedy, like the paper
    CsvCaptions("kodak_llava_1.5.csv")["kodim01.png"]  # the paper repo's precomputed LLaVA captions, byte-exact
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

from .caption_codec import NextTokenModel
from .config import CaptionConfig, resolve_model
from .errors import ConfigError, ItcError, WeightsError

__all__ = ["load_lmm", "caption_image", "build_prompt", "CsvCaptions"]


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


@torch.no_grad()
def caption_image(lm: NextTokenModel, image: Image.Image, max_new_tokens: int = 48) -> str:
    """The LMM's greedy caption of ``image`` (special tokens dropped, surrounding whitespace stripped)."""
    inputs = lm.processor(images=image.convert("RGB"), text=lm.prompt, return_tensors="pt")
    out = lm.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                            pad_token_id=lm.tokenizer.pad_token_id or lm.eos)
    return lm.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


class CsvCaptions:
    """Captions keyed by image file name, from a CSV.

    Reads the paper repository's format (``image_name`` and ``overall_description``
    columns, e.g. ``kodak_llava_1.5.csv``) or any CSV with ``image``/``file`` and
    ``caption`` columns. Text is kept byte-exact, leading spaces included.
    """

    NAME_COLUMNS = ("image_name", "image", "file", "filename")
    TEXT_COLUMNS = ("overall_description", "caption", "text")

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.is_file():
            raise ItcError(f"{path}: no such caption CSV")
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            name = next((c for c in self.NAME_COLUMNS if c in fields), None)
            text = next((c for c in self.TEXT_COLUMNS if c in fields), None)
            if not name or not text:
                raise ItcError(f"{path}: needs a name column ({', '.join(self.NAME_COLUMNS)}) and a caption column "
                               f"({', '.join(self.TEXT_COLUMNS)}); found {', '.join(fields)}")
            self.captions = {row[name]: row[text] for row in reader}

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, image_name: str) -> str:
        key = Path(image_name).name
        for candidate in (key, Path(key).stem, Path(key).stem + ".png"):
            if candidate in self.captions:
                return self.captions[candidate]
        raise KeyError(f"no caption for {image_name!r} in the CSV")
