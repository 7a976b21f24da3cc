"""Lossless caption coding, all methods behind one interface; bits always from the real payload.

Methods (``METHODS``):

- ``utf8``: the raw UTF-8 bytes (what the paper's bpp formula charges: 8 bits a character);
- ``zlib`` (level 9, with its 2-byte header and Adler-32) and ``lzma`` (raw LZMA2, no container);
- ``rank-zlib``: the paper's method: the rank of each true token under the LM's
  next-token distribution, as uint16, then zlib (GPTZip/LLMZip style; here with
  the whole caption as context instead of the paper's 8-token blocks);
- ``lm-ac``: range coding (constriction) of the tokens with the LM's next-token
  distribution, context = the prompt and a blank image (text-only mode);
- ``lmm-ac``: the same with the LMM looking at the *decoded LIC reconstruction*,
  which the decoder has too (never the original image), so the caption costs
  fewer bits: it only pays for what the original adds beyond the reconstruction.

The message ends with the model's EOS token (a length guard stops a corrupt
stream). Determinism is by construction: encoder and decoder run exactly the
same incremental computation (prefill prompt + image, then one token per step
with the KV cache) on one CPU thread in float32, and the softmax in float64
with numpy. Coded bytes are trimmed to the shortest prefix that still decodes
(checked at the encoder), so a caption whose NLL is a few bits costs 1-2 bytes
rather than a whole 32-bit word.
"""

from __future__ import annotations

import hashlib
import inspect
import lzma
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .caption_methods import LM_METHODS, METHOD_CODES, METHODS
from .determinism import one_thread
from .errors import ItcError
from .rangecoder import StreamDecoder, StreamEncoder, StreamError

__all__ = ["METHODS", "METHOD_CODES", "LM_METHODS", "AC_METHODS", "CaptionPayload", "CaptionCodingError",
           "NextTokenModel", "compress_caption", "decompress_caption", "encode_caption", "decode_caption",
           "compare_methods", "MAX_CAPTION_CHARS"]

AC_METHODS = ("lm-ac", "lmm-ac")  # range-coded: in an .itc file their tokens share the file's one stream
MAX_CAPTION_CHARS = 20_000
BLANK_GRAY = 128  # the context of the text-only methods: a uniform mid-gray image
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


class CaptionCodingError(ItcError):
    """A caption that cannot be coded, or a text payload that does not decode."""


@dataclass
class CaptionPayload:
    """A coded caption: ``data`` is the whole payload; ``nll_bits`` the model's −log2 p of the tokens (LM methods)."""

    method: str
    data: bytes
    chars: int
    tokens: int | None = None
    nll_bits: float | None = None

    @property
    def bits(self) -> int:
        """Payload size in bits."""
        return 8 * len(self.data)


def _softmax64(logits: torch.Tensor) -> np.ndarray:
    z = logits.detach().to(torch.float64).numpy()
    p = np.exp(z - z.max())
    return p / p.sum()


class NextTokenModel:
    """An image-text-to-text model (LLaVA, Idefics3, the tiny LMM, …) used as a next-token predictor for coding.

    Args:
        model: a transformers image-text-to-text model (eval mode, CPU, float32).
        processor: its processor (image processor + tokenizer).
        prompt: the full text before the caption, with the processor's image placeholder.
    """

    def __init__(self, model, processor, prompt: str):
        self.model = model.eval().float().cpu()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.prompt = prompt
        self.vocab_size = len(self.tokenizer)  # logits may be padded beyond it: fix V on both sides
        self.eos = self.tokenizer.eos_token_id
        self._cache_kw = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        self.max_positions = getattr(self.model.config.get_text_config(), "max_position_embeddings", 4096)
        self._fingerprint = None

    @classmethod
    def from_pretrained(cls, path: str | Path, prompt: str) -> "NextTokenModel":
        """Load model and processor with ``from_pretrained`` (a local folder or a hub id)."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        return cls(AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32),
                   AutoProcessor.from_pretrained(path), prompt)

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the weights and the tokenizer's vocabulary: which exact model codes a caption."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().contiguous().numpy().tobytes())
            digest.update(repr(sorted(self.tokenizer.get_vocab().items())).encode())
            digest.update(self.prompt.encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` plus EOS; special-token text (``</s>``, ``<image>``) is coded as plain bytes."""
        ids = self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        if self.eos is None or self.eos in ids:
            raise CaptionCodingError("the tokenizer has no EOS token, or the caption's text encodes to it")
        if self.tokenizer.decode(ids) != text:
            raise CaptionCodingError("this tokenizer does not reproduce the caption exactly "
                                     "(use a byte-level tokenizer or a non-LM method such as zlib)")
        return ids + [self.eos]

    def detokenize(self, ids: list[int]) -> str:
        """The text of ``ids`` (without the final EOS)."""
        return self.tokenizer.decode(ids[:-1] if ids and ids[-1] == self.eos else ids)

    @torch.no_grad()
    def _prefill(self, image: Image.Image):
        inputs = self.processor(images=image.convert("RGB"), text=self.prompt, return_tensors="pt")
        out = self.model(**inputs, use_cache=True)
        return out, inputs["input_ids"].shape[1]

    @torch.no_grad()
    def _step(self, token: int, cache):
        return self.model(input_ids=torch.tensor([[token]]), use_cache=True, **{self._cache_kw: cache})

    @staticmethod
    def _cache(out):
        return out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values

    def distributions(self, image: Image.Image, tokens: list[int]) -> np.ndarray:
        """(len(tokens), V) float64 next-token distributions along ``tokens``: exactly the decoder's path."""
        rows = []
        with one_thread():
            out, prefix = self._prefill(image)
            if prefix + len(tokens) > self.max_positions:
                raise CaptionCodingError(f"caption of {len(tokens)} tokens exceeds the model's context "
                                         f"({self.max_positions - prefix} tokens after the prompt)")
            for i, token in enumerate(tokens):
                rows.append(_softmax64(out.logits[0, -1, : self.vocab_size]))
                if i + 1 < len(tokens):
                    out = self._step(token, self._cache(out))
        return np.stack(rows)

    def log_likelihood(self, image: Image.Image, text: str) -> float:
        """ln p(``text`` + EOS | ``image``) in nats under this model: how much it believes a caption."""
        tokens = self.tokenize(text)
        probs = self.distributions(image, tokens)[np.arange(len(tokens)), tokens]
        return float(np.log(np.maximum(probs, 1e-300)).sum())

    def decode_stream(self, image: Image.Image, next_symbol) -> list[int]:
        """Run the model token by token; ``next_symbol(probs)`` returns each token; stops after EOS."""
        tokens = []
        with one_thread():
            out, prefix = self._prefill(image)
            while True:
                token = int(next_symbol(_softmax64(out.logits[0, -1, : self.vocab_size])))
                tokens.append(token)
                if token == self.eos:
                    return tokens
                if prefix + len(tokens) >= self.max_positions:
                    raise CaptionCodingError("text payload does not end within the model's context: "
                                             "a damaged payload or a different model than the encoder's")
                out = self._step(token, self._cache(out))


# ---------------------------------------------------------------- range coding with minimal termination

def _range_decode(stream: StreamDecoder):
    """A ``next_symbol(probs)`` closure over ``stream`` (stops once the decoded information exceeds its budget)."""
    def next_symbol(p):
        try:
            return stream.categorical(p[None], "caption")[0]
        except StreamError as err:
            raise CaptionCodingError(f"arithmetic-coded payload does not decode: {err}") from None
    return next_symbol


def _range_encode(symbols: np.ndarray, probs: np.ndarray) -> bytes:
    """Range-code ``symbols`` and return the shortest byte prefix (or prefix + 1) that decodes back to them."""
    stream = StreamEncoder()
    stream.categorical(symbols, probs, "caption")
    return stream.finish()


# ---------------------------------------------------------------- the methods

def _context(method: str, context_image: Image.Image | None) -> Image.Image:
    if method == "lmm-ac":
        if context_image is None:
            raise CaptionCodingError("lmm-ac needs the decoded reconstruction as --context-image")
        return context_image
    return Image.new("RGB", (64, 64), (BLANK_GRAY,) * 3)


def _check(text: str) -> None:
    if not isinstance(text, str):
        raise CaptionCodingError(f"a caption is text, got {type(text).__name__}")
    if len(text) > MAX_CAPTION_CHARS:
        raise CaptionCodingError(f"caption of {len(text)} characters; at most {MAX_CAPTION_CHARS}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CaptionCodingError("caption is not valid Unicode text (undecodable bytes?)") from None


def compress_caption(text: str, method: str = "lmm-ac", lm: NextTokenModel | None = None,
                     context_image: Image.Image | None = None) -> CaptionPayload:
    """Code ``text`` losslessly with ``method``; LM methods need ``lm`` (and ``lmm-ac`` the reconstruction)."""
    _check(text)
    raw = text.encode("utf-8")
    if method == "utf8":
        return CaptionPayload(method, raw, len(text))
    if method == "zlib":
        return CaptionPayload(method, zlib.compress(raw, 9), len(text))
    if method == "lzma":
        return CaptionPayload(method, lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS), len(text))
    if method not in LM_METHODS:
        raise CaptionCodingError(f"unknown caption method {method!r}; valid: {', '.join(METHODS)}")
    if lm is None:
        raise CaptionCodingError(f"{method} needs the preset's LMM")
    tokens = np.array(lm.tokenize(text), dtype=np.int32)
    probs = lm.distributions(_context(method, context_image), tokens.tolist())
    nll = float(-np.log2(probs[np.arange(len(tokens)), tokens]).sum())
    if method == "rank-zlib":
        order = np.argsort(-probs, axis=1, kind="stable")
        ranks = np.argmax(order == tokens[:, None], axis=1)
        data = zlib.compress(ranks.astype("<u2" if lm.vocab_size <= 65536 else "<u4").tobytes(), 9)
    else:
        data = _range_encode(tokens, probs)
    return CaptionPayload(method, data, len(text), len(tokens), nll)


_MAX_BYTES = 4 * MAX_CAPTION_CHARS  # the most UTF-8 bytes (or rank bytes) a valid caption can need


def _bounded(raw: bytes) -> bytes:
    if len(raw) > _MAX_BYTES:
        raise CaptionCodingError(f"text payload inflates beyond {_MAX_BYTES} bytes: not a caption")
    return raw


def decompress_caption(data: bytes, method: str, lm: NextTokenModel | None = None,
                       context_image: Image.Image | None = None) -> str:
    """The caption of a payload made by :func:`compress_caption` with the same method, model and context."""
    try:
        if method == "utf8":
            return data.decode("utf-8")
        if method == "zlib":
            return _bounded(zlib.decompressobj().decompress(data, _MAX_BYTES + 1)).decode("utf-8")
        if method == "lzma":
            inflater = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            return _bounded(inflater.decompress(data, max_length=_MAX_BYTES + 1)).decode("utf-8")
    except (zlib.error, lzma.LZMAError, UnicodeDecodeError) as err:
        raise CaptionCodingError(f"{method} text payload does not decode ({err})") from None
    if method not in LM_METHODS:
        raise CaptionCodingError(f"unknown caption method {method!r}; valid: {', '.join(METHODS)}")
    if lm is None:
        raise CaptionCodingError(f"{method} needs the preset's LMM")
    image = _context(method, context_image)
    if method == "rank-zlib":
        try:
            raw = _bounded(zlib.decompressobj().decompress(data, _MAX_BYTES + 1))
            ranks = np.frombuffer(raw, dtype="<u2" if lm.vocab_size <= 65536 else "<u4")
        except (zlib.error, ValueError) as err:
            raise CaptionCodingError(f"rank-zlib text payload does not decode ({err})") from None
        position = iter(ranks)

        def next_symbol(p):
            rank = next(position, None)
            if rank is None or rank >= len(p):
                raise CaptionCodingError("rank-zlib payload ends before EOS or holds an impossible rank")
            return np.argsort(-p, kind="stable")[rank]
        tokens = lm.decode_stream(image, next_symbol)
    else:
        tokens = lm.decode_stream(image, _range_decode(StreamDecoder(data)))
    return lm.detokenize(tokens)


def compare_methods(text: str, lm: NextTokenModel | None, context_image: Image.Image | None = None,
                    methods=METHODS) -> dict[str, CaptionPayload]:
    """Every method's payload for ``text`` (LM methods skipped without ``lm``, ``lmm-ac`` without a context)."""
    out = {}
    for method in methods:
        if method in LM_METHODS and lm is None or method == "lmm-ac" and context_image is None:
            continue
        out[method] = compress_caption(text, method, lm, context_image)
    return out


# ---------------------------------------------------------------- inside an .itc file's stream

_MAX_LENGTH_BYTES = 3  # varint of a byte count up to 2**21 > _MAX_BYTES


def encode_caption(stream: StreamEncoder, text: str, method: str, lm: NextTokenModel | None = None,
                   context_image: Image.Image | None = None) -> CaptionPayload:
    """Code ``text`` into a file's ``stream`` (after the latents).

    ``lm-ac``/``lmm-ac``: the tokens, EOS-terminated, with the LMM's probabilities (no framing at all;
    the payload's ``data`` is empty, its bits are the stream's ``caption`` accounting). Other methods:
    a varint byte count and the method's payload, 8 bits a byte.
    """
    if method not in AC_METHODS:
        payload = compress_caption(text, method, lm, context_image)
        n, length = len(payload.data), bytearray()
        while True:
            length.append(n & 0x7F | (0x80 if n >= 0x80 else 0))
            n >>= 7
            if not n:
                break
        stream.bytes(bytes(length) + payload.data, "caption")
        return payload
    _check(text)
    if lm is None:
        raise CaptionCodingError(f"{method} needs the preset's LMM")
    tokens = np.array(lm.tokenize(text), dtype=np.int32)
    probs = lm.distributions(_context(method, context_image), tokens.tolist())
    stream.categorical(tokens, probs, "caption")
    nll = float(-np.log2(probs[np.arange(len(tokens)), tokens]).sum())
    return CaptionPayload(method, b"", len(text), len(tokens), nll)


def decode_caption(stream: StreamDecoder, method: str, lm: NextTokenModel | None = None,
                   context_image: Image.Image | None = None) -> str:
    """The caption :func:`encode_caption` coded into ``stream``; stops once the stream's budget is spent."""
    if method not in METHODS:
        raise CaptionCodingError(f"unknown caption method {method!r}; valid: {', '.join(METHODS)}")
    if method in AC_METHODS:
        if lm is None:
            raise CaptionCodingError(f"{method} needs the preset's LMM")
        return lm.detokenize(lm.decode_stream(_context(method, context_image), _range_decode(stream)))
    try:
        n = shift = 0
        for _ in range(_MAX_LENGTH_BYTES):
            byte = stream.bytes(1, "caption")[0]
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        else:
            raise CaptionCodingError("caption length field too long")
        data = stream.bytes(n, "caption")  # the budget is checked before n bytes are decoded
    except StreamError as err:
        raise CaptionCodingError(f"caption does not decode: {err}") from None
    return decompress_caption(data, method, lm, context_image)
