"""The tiny world's tokenizer: byte-level BPE, so *any* Unicode string encodes (no ``<unk>``) and decodes back exactly."""

from __future__ import annotations

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from .scenes import caption, generate_scene, split_seeds

__all__ = ["SPECIAL_TOKENS", "IMAGE_TOKEN", "train_tokenizer"]

IMAGE_TOKEN = "<image>"
# EOS is not id 2 on purpose: CLIPTextModel treats eos_token_id == 2 as a legacy config and pools at argmax(id).
SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", IMAGE_TOKEN]


def train_tokenizer(vocab_size: int = 400, n_captions: int = 5000) -> PreTrainedTokenizerFast:
    """Byte-level BPE over ``n_captions`` training captions plus the 256 byte symbols and SPECIAL_TOKENS."""
    core = Tokenizer.from_str(_trained_bpe(vocab_size, n_captions))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", extra_special_tokens={"image_token": IMAGE_TOKEN})


@lru_cache(maxsize=4)
def _trained_bpe(vocab_size: int, n_captions: int) -> str:
    """The trained BPE as JSON; training is deterministic, so a process trains each size once (tests train many)."""
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator((caption(generate_scene(s)) for s in split_seeds("train", n_captions)), trainer)
    return core.to_str()
