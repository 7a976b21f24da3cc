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

``auto`` (the presets' choice) is not a method of its own: per caption it codes
with the cheapest method at hand, by what the caption will really cost
(:func:`choose_method`), and the file records that method. A caption the LMM
codes badly (text from another world) or cannot code at all (a tokenizer that
does not reproduce it) then costs what ``utf8``/``zlib`` would.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .bitstream import varint
from .caption_methods import AUTO, CHOICES, LM_METHODS, METHOD_CODES, METHODS
from .determinism import one_thread
from .errors import ItcError
from .rangecoder import StreamDecoder, StreamEncoder, StreamError

__all__ = ["METHODS", "METHOD_CODES", "LM_METHODS", "AC_METHODS", "AUTO", "CHOICES", "AUTO_ORDER", "CaptionPayload",
           "MethodChoice", "CaptionCodingError", "NextTokenModel", "compress_caption", "decompress_caption",
           "encode_caption", "decode_caption", "choose_method", "in_file_bits", "compare_methods", "MAX_CAPTION_CHARS"]

AC_METHODS = ("lm-ac", "lmm-ac")  # range-coded: in an .itc file their tokens share the file's one stream
# auto's candidates; a tie goes to the earlier. lm-ac only without a reconstruction: beside lmm-ac it costs a second
# LMM pass (a 7B model's, on hub presets) and saves a bit or so; rank-zlib (a sort over the vocabulary per token)
# was never the cheapest on 20 tiny-world and 24 Kodak captions.
AUTO_ORDER = ("lmm-ac", "lm-ac", "utf8", "zlib", "lzma")
MAX_CAPTION_CHARS = 20_000
BLANK_GRAY = 128  # the context of the text-only methods: a uniform mid-gray image
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]  # the decoder's (64 MiB dictionary)


def _lzma_filters(size: int) -> list[dict]:
    """The encoder's filters for ``size`` bytes: preset 9e with a dictionary just covering the input (at least
    4 KiB), which gives the same bytes as the 64 MiB one in a 300th of the time (65 ms a caption: the big
    dictionary's match finder takes most of a gigabyte)."""
    return [dict(_LZMA_FILTERS[0], dict_size=max(4096, 1 << (max(size, 1) - 1).bit_length()))]


class CaptionCodingError(ItcError):
    """A caption that cannot be coded, or a text payload that does not decode."""


@dataclass
class MethodChoice:
    """How ``auto`` chose a caption's method.

    Attributes:
        method: the method it coded with: the cheapest in ``bits`` (a tie goes to the earlier of ``AUTO_ORDER``).
        bits: the cost of each method at hand, in bits: inside a file (:func:`in_file_bits`) or, for a
            standalone payload, its bytes.
        ruled_out: method → why it could not code this caption (no LMM, no reconstruction, a tokenizer
            that does not reproduce the caption, a caption longer than the LMM's context).
    """

    method: str
    bits: dict[str, float]
    ruled_out: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: the method, every candidate's bits (cheapest first) and what was ruled out, why."""
        costs = ", ".join(f"{m} {b:.1f}" for m, b in sorted(self.bits.items(), key=lambda item: item[1]))
        reasons: dict[str, list[str]] = {}
        for method, why in self.ruled_out.items():
            reasons.setdefault(why, []).append(method)
        ruled = "".join(f"; not {'/'.join(methods)}: {why}" for why, methods in reasons.items())
        return f"auto chose {self.method} (bits: {costs}){ruled}"


@dataclass
class CaptionPayload:
    """A coded caption: ``data`` is the whole payload; ``nll_bits`` the model's −log2 p of the tokens (LM methods).

    ``method_choice`` says how ``auto`` chose ``method`` (None when the method was asked for by name).
    Inside an ``.itc`` file, ``lm-ac``/``lmm-ac`` payloads have empty ``data``: their tokens are in the stream.
    """

    method: str
    data: bytes
    chars: int
    tokens: int | None = None
    nll_bits: float | None = None
    method_choice: MethodChoice | None = None

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


class _LmPasses:
    """A caption's tokens and the LMM's distributions along them: one pass per context (blank or reconstruction),
    shared by the methods that read it (``rank-zlib`` and ``lm-ac`` the blank one), errors included."""

    def __init__(self, text: str, lm: NextTokenModel, context_image: Image.Image | None):
        self.text, self.lm, self.context_image = text, lm, context_image
        self._done: dict[str, object] = {}

    def _once(self, key: str, compute):
        if key not in self._done:
            try:
                self._done[key] = compute()
            except CaptionCodingError as err:
                self._done[key] = err
        if isinstance(self._done[key], CaptionCodingError):
            raise self._done[key]
        return self._done[key]

    def tokens(self) -> np.ndarray:
        """The caption's token ids plus EOS (CaptionCodingError when the tokenizer does not reproduce it)."""
        return self._once("tokens", lambda: np.array(self.lm.tokenize(self.text), dtype=np.int32))

    def probs(self, method: str) -> np.ndarray:
        """(tokens, V) next-token distributions in ``method``'s context: exactly what its coder uses."""
        key = "reconstruction" if method == "lmm-ac" else "blank"
        return self._once(key, lambda: self.lm.distributions(_context(method, self.context_image),
                                                             self.tokens().tolist()))


def _lm_payload(method: str, passes: _LmPasses, standalone: bool) -> CaptionPayload:
    """``method``'s payload from ``passes``; in a file (not ``standalone``) AC methods have no bytes of their own."""
    tokens, probs = passes.tokens(), passes.probs(method)
    nll = float(-np.log2(probs[np.arange(len(tokens)), tokens]).sum())
    if method == "rank-zlib":
        order = np.argsort(-probs, axis=1, kind="stable")
        ranks = np.argmax(order == tokens[:, None], axis=1)
        data = zlib.compress(ranks.astype("<u2" if passes.lm.vocab_size <= 65536 else "<u4").tobytes(), 9)
    else:
        data = _range_encode(tokens, probs) if standalone else b""
    return CaptionPayload(method, data, len(passes.text), len(tokens), nll)


def in_file_bits(payload: CaptionPayload) -> float:
    """What ``payload`` adds to an ``.itc`` file's stream, in bits (the file's ``caption`` bits).

    ``lm-ac``/``lmm-ac``: the tokens' −log2 p under the LMM, as the stream counts it (no framing);
    the other methods: 8·(varint byte count + payload bytes).
    """
    if payload.method in AC_METHODS:
        return payload.nll_bits
    return 8.0 * (len(varint(len(payload.data))) + len(payload.data))


def _unavailable(method: str, lm: NextTokenModel | None, context_image: Image.Image | None) -> str | None:
    if method in LM_METHODS and lm is None:
        return "no LMM"
    if method == "lmm-ac" and context_image is None:
        return "no reconstruction to look at"
    return None


def _choose(text: str, lm: NextTokenModel | None, context_image: Image.Image | None,
            in_file: bool) -> tuple[CaptionPayload, _LmPasses | None]:
    """The cheapest payload of ``text`` among ``AUTO_ORDER`` (its ``method_choice`` filled in), and the LMM passes."""
    passes = None if lm is None else _LmPasses(text, lm, context_image)
    payloads, ruled_out = {}, {}
    for method in AUTO_ORDER:
        if method == "lm-ac" and lm is not None and context_image is not None:
            continue
        why = _unavailable(method, lm, context_image)
        try:
            if why is None:
                payloads[method] = (_lm_payload(method, passes, not in_file) if method in LM_METHODS
                                    else compress_caption(text, method))
        except CaptionCodingError as err:
            why = str(err)
        if why is not None:
            ruled_out[method] = why
    bits = {m: in_file_bits(p) if in_file else float(p.bits) for m, p in payloads.items()}
    best = min(bits, key=lambda m: (bits[m], AUTO_ORDER.index(m)))
    payloads[best].method_choice = MethodChoice(best, bits, ruled_out)
    return payloads[best], passes


def choose_method(text: str, lm: NextTokenModel | None = None, context_image: Image.Image | None = None,
                  in_file: bool = True) -> MethodChoice:
    """What ``auto`` would code ``text`` with, and every method's cost in bits.

    Args:
        lm: the preset's LMM (None: only ``utf8``/``zlib``/``lzma``).
        context_image: the decoded reconstruction (None: no ``lmm-ac``).
        in_file: cost inside an ``.itc`` file (:func:`in_file_bits`: AC methods their −log2 p in the shared
            stream, the others a varint length and their bytes) rather than as a standalone payload.
    """
    _check(text)
    return _choose(text, lm, context_image, in_file)[0].method_choice


def compress_caption(text: str, method: str = "lmm-ac", lm: NextTokenModel | None = None,
                     context_image: Image.Image | None = None) -> CaptionPayload:
    """Code ``text`` losslessly with ``method``; LM methods need ``lm`` (and ``lmm-ac`` the reconstruction).

    ``auto``: the method whose payload has the fewest bytes among those at hand (see :func:`choose_method`).
    """
    _check(text)
    raw = text.encode("utf-8")
    if method == "utf8":
        return CaptionPayload(method, raw, len(text))
    if method == "zlib":
        return CaptionPayload(method, zlib.compress(raw, 9), len(text))
    if method == "lzma":
        return CaptionPayload(method, lzma.compress(raw, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(raw))),
                              len(text))
    if method == AUTO:
        return _choose(text, lm, context_image, in_file=False)[0]
    if method not in LM_METHODS:
        raise CaptionCodingError(f"unknown caption method {method!r}; valid: {', '.join(CHOICES)}")
    if lm is None:
        raise CaptionCodingError(f"{method} needs the preset's LMM")
    return _lm_payload(method, _LmPasses(text, lm, context_image), standalone=True)


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
    """Code ``text`` into a file's ``stream`` (after the latents); the payload says which method coded it.

    ``lm-ac``/``lmm-ac``: the tokens, EOS-terminated, with the LMM's probabilities (no framing at all;
    the payload's ``data`` is empty, its bits are the stream's ``caption`` accounting). Other methods:
    a varint byte count and the method's payload, 8 bits a byte. ``auto``: the method of these whose
    :func:`in_file_bits` are fewest (the LMM runs once per context it needs), so the caption never costs
    more than ``utf8`` or ``zlib`` would; an LM method that cannot code the caption is passed over, while
    one asked for by name raises :class:`CaptionCodingError`.
    """
    _check(text)
    passes = None
    if method == AUTO:
        payload, passes = _choose(text, lm, context_image, in_file=True)
    elif method in AC_METHODS:
        if lm is None:
            raise CaptionCodingError(f"{method} needs the preset's LMM")
        passes = _LmPasses(text, lm, context_image)
        payload = _lm_payload(method, passes, standalone=False)
    else:
        payload = compress_caption(text, method, lm, context_image)
    if payload.method in AC_METHODS:
        stream.categorical(passes.tokens(), passes.probs(payload.method), "caption")
    else:
        stream.bytes(varint(len(payload.data)) + payload.data, "caption")
    return payload


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
