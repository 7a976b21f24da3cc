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
import zlib
from dataclasses import dataclass, field

from PIL import Image

from . import bitstream
from .caption_codec import (LM_METHODS, METHOD_CODES, METHODS, CaptionCodingError, CaptionPayload,
                            compress_caption, decompress_caption)
from .config import PRESETS, Config, load_config
from .data import image_to_tensor, tensor_to_image, to_rgb
from .errors import ConfigError
from .image_codec import ImageCodec, LicPayload

__all__ = ["ImageTextCodec", "EncodeResult", "DecodeResult", "describe", "LMM_FINGERPRINT_BYTES"]

LMM_FINGERPRINT_BYTES = 2  # prefix of the text section for LM methods: decoding with another LMM is refused
_METHOD_NAMES = {code: name for name, code in METHOD_CODES.items()}


@dataclass
class EncodeResult:
    """What ``encode`` made: the file's bytes, the reconstruction both sides see, the LIC and caption payloads."""

    data: bytes
    reconstruction: Image.Image
    payload: LicPayload
    quality: int
    caption: str | None = None
    caption_payload: CaptionPayload | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def bpp(self) -> float:
        """All bits of the file (container included) per pixel."""
        return 8 * len(self.data) / (self.payload.width * self.payload.height)


@dataclass
class DecodeResult:
    """What ``decode`` made: the reconstruction, the caption (None when the file has none), the file's fields
    and the restored image (None when not restoring)."""

    reconstruction: Image.Image
    file: bitstream.ItcFile
    caption: str | None = None
    restored: Image.Image | None = None

    @property
    def image(self) -> Image.Image:
        """The decoder's output: the restored image, or the reconstruction when not restoring."""
        return self.reconstruction if self.restored is None else self.restored


def _split_text(f: bitstream.ItcFile) -> tuple[str | None, bytes, bytes]:
    """(method name, LMM fingerprint prefix, caption payload) of a file's text section."""
    if not f.text_method:
        return None, b"", b""
    method = _METHOD_NAMES.get(f.text_method)
    if method is None:
        raise bitstream.CorruptedFile(f"unknown text method code {f.text_method}")
    n = LMM_FINGERPRINT_BYTES if method in LM_METHODS else 0
    if len(f.text) < n:
        raise bitstream.CorruptedFile("text section shorter than its model fingerprint")
    return method, f.text[:n], f.text[n:]


def describe(data: bytes, caption: str | None = None) -> dict:
    """Sizes, bpp split and model fields of an ``.itc`` file, as ``itc inspect --json`` prints them."""
    f = bitstream.unpack(data)
    method, lmm_fp, text = _split_text(f)
    pixels = f.width * f.height
    image_bytes = sum(map(len, f.image_strings))
    text_bytes = len(text)
    models = {"lic": f.lic_fingerprint.hex()}
    if lmm_fp:
        models["lmm"] = lmm_fp.hex()
    return {
        "width": f.width,
        "height": f.height,
        "preset": f.preset,
        "quality": f.quality,
        "bytes_total": len(data),
        "bytes_image": image_bytes,
        "bytes_text": text_bytes,
        "bytes_overhead": len(data) - image_bytes - text_bytes,
        "bytes_per_string": [len(s) for s in f.image_strings],
        "bpp_total": 8 * len(data) / pixels,
        "bpp_payload": 8 * (image_bytes + text_bytes) / pixels,
        "bpp_image": 8 * image_bytes / pixels,
        "bpp_text": 8 * text_bytes / pixels,
        "bits_text": 8 * text_bytes,
        "text_method": method,
        "caption": caption,
        "models": models,
    }


class ImageTextCodec:
    """A preset's models (LIC per quality, one LMM), loaded lazily, with ``encode``/``decode`` to and from ``.itc`` bytes."""

    def __init__(self, config: Config):
        self.config = config
        self._image_codecs: dict[int, ImageCodec] = {}
        self._lmm = None
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
    def restorer(self):
        """The preset's :class:`~itc_core.restorer.Restorer` (diffusers is imported on first use)."""
        if self._restorer is None:
            from .restorer import Restorer
            self._restorer = Restorer(self.config.restorer)
        return self._restorer

    def caption(self, image: Image.Image) -> str:
        """The LMM's caption of ``image`` (the original, at the encoder)."""
        from .captioner import caption_image
        return caption_image(self.lmm, to_rgb(image)[0], self.config.caption.max_new_tokens)

    def _lic_round_trip(self, image: Image.Image, quality: int | None):
        lic = self.image_codec(quality)
        payload = lic.compress(image_to_tensor(image))
        return lic, payload, tensor_to_image(lic.decompress(payload.strings, payload.height, payload.width))

    def reconstruct(self, image: Image.Image, quality: int | None = None) -> Image.Image:
        """The LIC reconstruction of ``image`` at ``quality``: exactly what the decoder will see (and ``lmm-ac``'s context)."""
        return self._lic_round_trip(to_rgb(image)[0], quality)[2]

    def encode(self, image: Image.Image, quality: int | None = None, caption: str | bool | None = None,
               method: str | None = None) -> EncodeResult:
        """Code ``image`` (any PIL mode, any size) and its caption into ``.itc`` bytes.

        Args:
            caption: the caption to store; None: the preset's LMM writes it (if the preset has one);
                False: store no caption.
            method: caption coding method (default: the preset's ``caption.method``).

        The encoder decodes its own strings, so ``reconstruction`` is exactly what
        ``decode`` will give, and it is the context of the ``lmm-ac`` coder.
        """
        image, notes = to_rgb(image)
        lic, payload, reconstruction = self._lic_round_trip(image, quality)
        if caption is None and self.config.caption.lmm:
            caption = self.caption(image)
        text_fields, caption_payload = {}, None
        if isinstance(caption, str):
            method = method or self.config.caption.method
            if method not in METHODS:
                raise ConfigError(f"unknown caption method {method!r}; valid: {', '.join(METHODS)}")
            lm = self.lmm if method in LM_METHODS else None
            caption_payload = compress_caption(caption, method, lm, reconstruction)
            prefix = bytes.fromhex(lm.fingerprint)[:LMM_FINGERPRINT_BYTES] if lm else b""
            text_fields = dict(text_method=METHOD_CODES[method], text=prefix + caption_payload.data,
                               caption_crc=zlib.crc32(caption.encode("utf-8")))
        f = bitstream.ItcFile(
            width=payload.width, height=payload.height, preset=self.preset_code_name, quality=lic.quality,
            lic_fingerprint=bytes.fromhex(lic.fingerprint)[:bitstream.FINGERPRINT_BYTES],
            image_strings=payload.strings, **text_fields)
        return EncodeResult(bitstream.pack(f), reconstruction, payload, lic.quality,
                            caption if isinstance(caption, str) else None, caption_payload, notes)

    def encode_at_bpp(self, image: Image.Image, target_bpp: float, caption: str | bool | None = None) -> EncodeResult:
        """The highest-quality encoding whose whole file fits ``target_bpp``; ConfigError if none does."""
        if caption is None and self.config.caption.lmm:
            caption = self.caption(image)  # once, not per quality
        if not math.isfinite(target_bpp) or target_bpp <= 0:
            raise ConfigError(f"target bpp must be a positive number, got {target_bpp}")
        # Every quality is tried: with a caption coded against each reconstruction, size need not grow with quality.
        results = [self.encode(image, q, caption) for q in sorted(self.config.image_codec.qualities)]
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
        lic = self.image_codec(f.quality)
        expected = bytes.fromhex(lic.fingerprint)[:bitstream.FINGERPRINT_BYTES]
        if f.lic_fingerprint != expected:
            raise bitstream.ModelMismatch(
                f"file was encoded with LIC weights {f.lic_fingerprint.hex()}, the loaded q{f.quality} weights "
                f"are {expected.hex()}: decode with the encoder's weights")
        if len(f.image_strings) != len(lic.latent_names):
            raise bitstream.CorruptedFile(f"image section holds {len(f.image_strings)} strings, "
                                          f"{lic.architecture} needs {len(lic.latent_names)}")
        return lic

    def _decode_caption(self, f: bitstream.ItcFile, reconstruction: Image.Image) -> str | None:
        method, lmm_fp, text = _split_text(f)
        if method is None:
            return None
        lm = self.lmm if method in LM_METHODS else None
        if lm is not None and bytes.fromhex(lm.fingerprint)[:LMM_FINGERPRINT_BYTES] != lmm_fp:
            raise bitstream.ModelMismatch(f"caption was coded with LMM {lmm_fp.hex()}, the loaded LMM is "
                                          f"{lm.fingerprint[:2 * LMM_FINGERPRINT_BYTES]}: decode with the encoder's LMM")
        try:
            caption = decompress_caption(text, method, lm, reconstruction)
        except CaptionCodingError as err:
            raise bitstream.CorruptedFile(f"text section does not decode: {err}") from None
        if zlib.crc32(caption.encode("utf-8")) != f.caption_crc:
            raise bitstream.CorruptedFile(
                "decoded caption fails its CRC-32: the text section is damaged, or this machine computes the "
                "LMM's probabilities differently from the encoder's (other platform or library versions)")
        return caption

    def decode(self, data: bytes, restore: bool | None = None, **restore_args) -> DecodeResult:
        """Rebuild the reconstruction, the caption and the restored image from ``.itc`` bytes.

        Args:
            restore: run the restorer (default: when the preset has one); False gives the bare reconstruction.
            restore_args: ``steps``, ``guidance``, ``seed``, ``colour_fix`` for
                :meth:`~itc_core.restorer.Restorer.restore` (default: the preset's).

        A bad or foreign file raises a ``BitstreamError``.
        """
        f = bitstream.unpack(data)
        lic = self._check_file(f)
        try:
            image = tensor_to_image(lic.decompress(f.image_strings, f.height, f.width))
        except (RuntimeError, ValueError, IndexError) as err:  # CompressAI's decoder on strings it did not write
            raise bitstream.CorruptedFile(f"image section does not decode ({type(err).__name__})") from None
        caption = self._decode_caption(f, image)
        if restore is None:
            restore = self.config.restorer.kind is not None
        restored = self.restorer.restore(image, caption, **restore_args) if restore else None
        return DecodeResult(image, f, caption, restored)
