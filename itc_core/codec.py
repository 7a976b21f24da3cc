"""``ImageTextCodec``: the one place that wires the stages together.

LMM-driven semantic image-text coding (Murai, Sun & Katto, VCIP 2024,
arXiv 2411.13033)::

    image ──► LIC encoder ──► image bytes ───────────────────────────┐
      │                  └──► (decoded at the encoder) reconstruction │
      └──► LMM caption ──► LMM text coder (context: reconstruction) ──┴──► .itc file

    .itc ──► LIC decoder ──► reconstruction ──► LMM text decoder ──► caption
                                    └──────────┬───────────────────────┘
                                               └──► diffusion restorer ──► image

    codec = ImageTextCodec.from_preset("tiny")
    result = codec.encode(image)            # PIL image, any mode and size; caption by the LMM
    decoded = codec.decode(result.data)     # bit-identical reconstruction, the exact caption, the restored image
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image

from . import bitstream
from .caption_codec import (AUTO, CHOICES, LM_METHODS, CaptionCodingError, CaptionPayload, decode_caption,
                            encode_caption)
from .config import PRESETS, Config, load_config
from .data import image_to_tensor, tensor_to_image, to_rgb
from .errors import ConfigError

from .rangecoder import StreamDecoder, StreamEncoder, StreamError

if TYPE_CHECKING:  # image_codec imports CompressAI (seconds): only commands that code images pay for it
    from .image_codec import ImageCodec

__all__ = ["ImageTextCodec", "EncodeResult", "DecodeResult", "describe", "bits_split"]


def bits_split(data: bytes, info: dict[str, float]) -> dict[str, float]:
    """A file's bits by part: header, ``z``/``y``/``caption`` (the coder's −log2 p), termination, check.

    ``termination`` is the payload's bits minus the information coded in it: what the
    trimmed flush costs (it may be a few bits negative: the decoder's implicit zeros
    past the end carry some). The parts sum to ``8·len(data)``.
    """
    f = bitstream.unpack(data)
    parts = {"header": 8.0 * f.header_bytes}
    parts.update({name: float(info.get(name, 0.0)) for name in ("z", "y", "caption")})
    parts["termination"] = 8.0 * len(f.payload) - sum(info.values())
    parts["check"] = 8.0 * bitstream.CHECK_BYTES
    return parts


@dataclass
class EncodeResult:
    """What ``encode`` made: the file's bytes, the reconstruction both sides see, and the bits by part.

    Attributes:
        bits: :func:`bits_split` of the file, from the coder's own accounting.
    """

    data: bytes
    reconstruction: Image.Image
    quality: int
    width: int
    height: int
    bits: dict[str, float]
    caption: str | None = None
    caption_payload: CaptionPayload | None = None
    notes: list[str] = field(default_factory=list)
    caption_choice: object | None = None  # a captioner.CaptionChoice when the LMM wrote the caption

    @property
    def bpp(self) -> float:
        """All bits of the file (container included) per pixel."""
        return 8 * len(self.data) / (self.width * self.height)


@dataclass
class DecodeResult:
    """What ``decode`` made: the reconstruction, the caption (None when the file has none), the fields and bits,
    and the restored image (None when not restoring).

    Attributes:
        checked: whether the file's check was verified (False only for ``decode(..., caption=False)``
            of a file with a caption: the check covers the caption).
    """

    reconstruction: Image.Image
    file: bitstream.ItcFile
    caption: str | None
    bits: dict[str, float]
    checked: bool = True
    restored: Image.Image | None = None
    notes: list[str] = field(default_factory=list)  # e.g. why the restorer left the file as it is (itc_core.domain)

    @property
    def image(self) -> Image.Image:
        """The decoder's output: the restored image, or the reconstruction when not restoring."""
        return self.reconstruction if self.restored is None else self.restored


def describe(data: bytes, decoded: DecodeResult | None = None, models: dict | None = None) -> dict:
    """Sizes, bpp and bits split of an ``.itc`` file, as ``itc inspect --json`` prints them.

    Without ``decoded`` only the model-free fields (:func:`bitstream.sizes`); with it, the
    split of bits by part from the decoder's accounting, the caption and whether the check held.
    """
    info = bitstream.sizes(data)
    pixels = info["width"] * info["height"]
    info["bytes_overhead"] = info["bytes_header"] + info["bytes_check"]
    if decoded is not None:
        bits = decoded.bits
        info.update(bits=bits, caption=decoded.caption, check_verified=decoded.checked,
                    bpp_image=(bits["z"] + bits["y"]) / pixels, bpp_text=bits["caption"] / pixels,
                    bpp_overhead=(bits["header"] + bits["termination"] + bits["check"]) / pixels)
    if models:
        info["models"] = models
    return info


def _method_notes(payload: CaptionPayload) -> list[str]:
    """A note when ``auto``, given the LMM and the reconstruction, could not code the caption with the LMM
    (a tokenizer that does not reproduce it, a caption longer than the LMM's context)."""
    ruled_out = payload.method_choice.ruled_out if payload.method_choice else {}
    reasons = sorted({why for m, why in ruled_out.items() if m in LM_METHODS})
    return [f"the LMM cannot code this caption ({'; '.join(reasons)}): coded with {payload.method}"] if reasons else []


class ImageTextCodec:
    """A preset's models (LIC per quality, one LMM), loaded lazily, with ``encode``/``decode`` to and from ``.itc`` bytes."""

    def __init__(self, config: Config):
        self.config = config
        self._image_codecs: dict[int, ImageCodec] = {}
        self._lmm = None
        self._clip = None
        self._rank_clip = None
        self._restorer = None

    @classmethod
    def from_preset(cls, preset: str = "tiny") -> "ImageTextCodec":
        """The codec of a preset name (``tiny``, ``laptop``, ``paper``) or a user YAML path."""
        return cls(load_config(preset))

    @property
    def preset_code_name(self) -> str:
        """The preset as stored in a file: its name, or ``custom`` for a user YAML."""
        return self.config.name if self.config.name in PRESETS else "custom"

    def image_codec(self, quality: int | None = None) -> ImageCodec:
        """The LIC at ``quality`` (default: the preset's), loaded on first use."""
        quality = self.config.image_codec.quality if quality is None else quality
        if quality not in self._image_codecs:
            from .image_codec import ImageCodec
            self._image_codecs[quality] = ImageCodec.from_config(self.config.image_codec, quality)
        return self._image_codecs[quality]

    @property
    def lmm(self):
        """The preset's LMM as a :class:`~itc_core.caption_codec.NextTokenModel`, loaded on first use."""
        if self._lmm is None:
            from .captioner import load_lmm
            self._lmm = load_lmm(self.config.caption)
        return self._lmm

    @property
    def clip(self):
        """The preset's CLIP (``caption.clip``), loaded on first use: ``itc eval`` scores with it."""
        if self._clip is None:
            from .captioner import load_clip
            self._clip = load_clip(self.config.caption.clip)
        return self._clip

    @property
    def rank_clip(self):
        """The CLIP that ranks caption candidates: ``caption.rank_clip``, else the preset's :attr:`clip`."""
        if not self.config.caption.rank_clip:
            return self.clip
        if self._rank_clip is None:
            from .captioner import load_clip
            self._rank_clip = load_clip(self.config.caption.rank_clip)
        return self._rank_clip

    @property
    def restorer(self):
        """The preset's :class:`~itc_core.restorer.Restorer` (diffusers is imported on first use)."""
        if self._restorer is None:
            from .restorer import Restorer
            self._restorer = Restorer(self.config.restorer)
        return self._restorer

    def choose_caption(self, image: Image.Image, reconstruction: Image.Image | None = None, select: str | None = None,
                       method: str | None = None):
        """The LMM's caption of ``image`` (the original), chosen by ``select`` (default: the preset's
        ``caption.select``), as a :class:`~itc_core.captioner.CaptionChoice`.

        ``rate-aware`` counts bits with ``method`` (default: the preset's) given ``reconstruction``
        (default: the reconstruction at the preset's quality); for ``auto`` it counts ``lmm-ac``'s,
        which bound what ``auto`` spends on the LMM's own captions.
        """
        from .captioner import generation_kwargs, select_caption

        cfg = self.config.caption
        select = select or cfg.select
        method = method or cfg.method
        if method == AUTO:
            method = "lmm-ac"
        image = to_rgb(image)[0]
        if select == "rate-aware" and reconstruction is None and method == "lmm-ac":
            reconstruction = self.reconstruct(image)
        return select_caption(self.lmm, image, select, cfg.candidates, self.rank_clip if select != "greedy" else None,
                              reconstruction, method, cfg.clip_margin, cfg.rank_lm_weight, **generation_kwargs(cfg))

    def caption(self, image: Image.Image, select: str | None = None) -> str:
        """The LMM's caption of ``image`` (the original, at the encoder), selected as in :meth:`choose_caption`."""
        return self.choose_caption(image, select=select).text

    def reconstruct(self, image: Image.Image, quality: int | None = None) -> Image.Image:
        """The LIC reconstruction of ``image`` at ``quality``: exactly what the decoder will see (and ``lmm-ac``'s context)."""
        return tensor_to_image(self.image_codec(quality).encode_to(StreamEncoder(), image_to_tensor(to_rgb(image)[0])))

    def _models(self, lic: ImageCodec, method: str | None) -> tuple[bytes, object]:
        """(full fingerprint of the models a file needs, the LMM or None)."""
        lm = self.lmm if method in LM_METHODS else None
        return bitstream.model_fingerprint(lic.fingerprint, lm.fingerprint if lm else None), lm

    def domain_verdict(self, image: Image.Image):
        """:func:`~itc_core.domain.check_domain` of ``image`` against the preset's ``domain`` (None: it sets none)."""
        if not self.config.domain:
            return None
        from .domain import check_domain
        return check_domain(to_rgb(image)[0], self.config.domain)

    def _domain_gate(self, image: Image.Image, caption: str | bool | None, domain_check: bool,
                     notes: list[str]) -> tuple[str | bool | None, bool]:
        """(the caption ``encode`` goes on with, whether the file is marked out of domain): for an image outside
        the preset's domain, no LMM caption and the mark (a given caption is stored instead), and a note."""
        verdict = self.domain_verdict(image) if domain_check else None
        if verdict is None or verdict.in_domain:
            return caption, False
        from .domain import out_of_domain_note, restores_file
        given = isinstance(caption, str) and caption != ""
        restored = self.config.restorer.kind is not None and restores_file(verdict.domain, *image.size, not given)
        notes.append(out_of_domain_note(verdict, given, restored))
        return (caption, False) if given else (False, True)

    def _restores(self, f: bitstream.ItcFile, notes: list[str]) -> bool:
        """Whether the preset's domain lets its restorer restore file ``f``; a note in ``notes`` when not."""
        from .domain import restores_file, unrestored_note
        if restores_file(self.config.domain, f.width, f.height, f.out_of_domain):
            return True
        notes.append(unrestored_note(f.width, f.height, f.out_of_domain))
        return False

    def encode(self, image: Image.Image, quality: int | None = None, caption: str | bool | None = None,
               method: str | None = None, caption_select: str | None = None, domain_check: bool = True
               ) -> EncodeResult:
        """Code ``image`` (any PIL mode, any size) and its caption into ``.itc`` bytes.

        Args:
            caption: the caption to store; None: the preset's LMM writes it (if the preset has one);
                False or "": store no caption (the empty caption carries nothing: the file records no
                caption, costs no caption bit, and decodes to caption None; the restorer restores it uncaptioned).
            method: caption coding method (default: the preset's ``caption.method``); ``auto`` codes with
                the cheapest method at hand (``caption_payload.method_choice`` says which and why) and the
                file records that method.
            caption_select: how the LMM's caption is chosen (default: the preset's ``caption.select``);
                the decoder does not depend on it.
            domain_check: apply the preset's ``domain`` (:mod:`itc_core.domain`): an image outside it gets a
                note in ``notes``, no LMM caption and a mark in the file that keeps the decoder's restorer off
                it (a given caption is stored instead, unmarked). False: code it as any other.

        The latents and the caption share one range-coded stream; ``reconstruction``
        is exactly what ``decode`` will give, and it is the context of the ``lmm-ac`` coder.
        """
        method = method or self.config.caption.method
        if method not in CHOICES:
            raise ConfigError(f"unknown caption method {method!r}; valid: {', '.join(CHOICES)}")
        if method in LM_METHODS and not self.config.caption.lmm and caption is not False:
            raise ConfigError(f"caption method {method} needs an LMM, and preset {self.config.name} has none "
                              "(use utf8, zlib, lzma or auto)")
        image, notes = to_rgb(image)
        bitstream.check_size(image.width, image.height)  # before any model loads
        lic = self.image_codec(quality)
        caption, out_of_domain = self._domain_gate(image, caption, domain_check, notes)
        stream = StreamEncoder()
        reconstruction = tensor_to_image(lic.encode_to(stream, image_to_tensor(image)))
        choice = None
        if caption is None and self.config.caption.lmm:
            choice = self.choose_caption(image, reconstruction, caption_select, method)
            caption = choice.text
        caption = caption if isinstance(caption, str) else None
        if caption == "":
            notes.append("the caption is empty: the file stores no caption (0 bits; decoding gives none)")
            caption = None
        caption_payload = None
        if caption is not None:
            lm = self.lmm if method in LM_METHODS or method == AUTO and self.config.caption.lmm else None
            caption_payload = encode_caption(stream, caption, method, lm, reconstruction)
            notes += _method_notes(caption_payload) if lm is not None else []
        method = caption_payload.method if caption_payload else None
        models, _ = self._models(lic, method)
        f = bitstream.ItcFile(image.width, image.height, self.preset_code_name, lic.quality, method,
                              bitstream.fingerprint_byte(models), stream.finish(),
                              out_of_domain=out_of_domain and method is None)
        body = bitstream.header(f) + f.payload
        data = body + bitstream.check_value(models, body, caption, reconstruction.tobytes())
        return EncodeResult(data, reconstruction, lic.quality, image.width, image.height,
                            bits_split(data, stream.info), caption, caption_payload, notes, choice)

    def encode_at_bpp(self, image: Image.Image, target_bpp: float, caption: str | bool | None = None,
                      caption_select: str | None = None, method: str | None = None, domain_check: bool = True
                      ) -> EncodeResult:
        """The highest-quality encoding whose whole file fits ``target_bpp``; ConfigError if none does
        (``caption``, ``caption_select``, ``method``, ``domain_check``: as in :meth:`encode`)."""
        if not math.isfinite(target_bpp) or target_bpp <= 0:
            raise ConfigError(f"target bpp must be a positive number, got {target_bpp}")
        choice = None
        verdict = self.domain_verdict(image) if domain_check and caption is None else None
        if verdict is not None and not verdict.in_domain:
            caption = False  # outside the domain: no LMM caption at any quality (encode notes why)
        if caption is None and self.config.caption.lmm and (caption_select or self.config.caption.select) != "rate-aware":
            choice = self.choose_caption(image, select=caption_select)  # once, not per quality
            caption = choice.text
        # Every quality is tried: with a caption coded against each reconstruction, size need not grow with quality.
        # (rate-aware selection depends on the reconstruction, so it runs per quality.)
        results = [self.encode(image, q, caption, method, caption_select, domain_check)
                   for q in sorted(self.config.image_codec.qualities)]
        for r in results:
            r.caption_choice = r.caption_choice or choice
        fitting = [r for r in results if r.bpp <= target_bpp]
        if not fitting:
            raise ConfigError(f"no quality of preset {self.config.name} reaches {target_bpp} bpp "
                              f"(the smallest file gives {min(r.bpp for r in results):.4f} bpp)")
        return fitting[-1]

    def _check_file(self, f: bitstream.ItcFile) -> ImageCodec:
        if f.preset != self.preset_code_name:
            raise bitstream.ModelMismatch(
                f"file was encoded with preset {f.preset!r}, this codec is {self.preset_code_name!r}"
                + (" (pass the same --preset YAML)" if f.preset == "custom" else f" (use --preset {f.preset})"))
        if f.quality not in self.config.image_codec.qualities:
            raise bitstream.ModelMismatch(f"file uses LIC quality {f.quality}, not offered by preset {self.config.name}")
        return self.image_codec(f.quality)

    def decode(self, data: bytes, caption: bool = True, restore: bool | None = None, domain_check: bool = True,
               **restore_args) -> DecodeResult:
        """Rebuild the reconstruction, the caption and the restored image from ``.itc`` bytes.

        A bad or foreign file raises a ``BitstreamError``.

        Args:
            caption: decode the caption too; False decodes the image only (no LMM; the check, which covers
                the caption, is then verified only for files without one).
            restore: run the restorer (default: when the preset has one); False gives the bare reconstruction.
            domain_check: apply the preset's ``domain`` when ``restore`` is left to its default: the tiny
                world's restorer restores only 64x64 files that the encoder did not mark as outside the domain
                (:func:`~itc_core.domain.restores_file`; ``notes`` says when it does not). False: restore any file.
            restore_args: ``steps``, ``guidance``, ``seed``, ``colour_fix`` for
                :meth:`~itc_core.restorer.Restorer.restore` (default: the preset's; its guidance at the file's
                rate point).

        Decoding costs time in proportion to the file's size: the latents' count is checked against
        the payload's bits before any model runs, and decoding stops once the decoded information
        exceeds them.
        """
        f = bitstream.unpack(data)
        lic = self._check_file(f)
        method = f.text_method if caption else None
        models, lm = self._models(lic, method)
        checked = method == f.text_method
        if checked and bitstream.fingerprint_byte(models) != f.fingerprint:
            what = f"LIC q{f.quality} {lic.fingerprint[:8]}" + (f" and LMM {lm.fingerprint[:8]}" if lm else "")
            raise bitstream.ModelMismatch(f"file was encoded with other weights than this preset's ({what}): "
                                          "decode with the encoder's weights")
        stream = StreamDecoder(f.payload)
        try:
            image = tensor_to_image(lic.decode_from(stream, f.height, f.width))
            text = decode_caption(stream, method, lm, image) if method else None
        except (StreamError, CaptionCodingError) as err:
            raise bitstream.CorruptedFile(f"payload does not decode: {err}") from None
        if checked and bitstream.check_value(models, data[:-bitstream.CHECK_BYTES], text, image.tobytes()) != f.check:
            raise bitstream.CorruptedFile(
                "the file's check fails: it is damaged, or was encoded with other weights, or this machine "
                "computes the models differently from the encoder's (other platform or library versions)")
        notes = []
        if restore is None:  # the default; an explicit restore=True restores whatever the domain says
            restore = self.config.restorer.kind is not None
            if restore and domain_check and self.config.domain:
                restore = self._restores(f, notes)
        restored = self.restorer.restore(image, text, quality=f.quality, **restore_args) if restore else None
        return DecodeResult(image, f, text, bits_split(data, stream.info), checked, restored, notes)
