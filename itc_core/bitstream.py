"""The ``.itc`` container: everything the decoder needs besides the model weights (docs/design.md §4).

Layout, version 2 (varint = unsigned LEB128)::

    "IT" | version u8 (= 2) | width−1 varint | height−1 varint | fields u8 | [quality u8]
         | fingerprint u8 | payload … | check u16

    fields: bits 0-2 caption method (0 = no caption, 1-6 = ``TEXT_METHODS``, 7 = no caption because the
            encoder found the image outside its preset's domain: ``itc_core.domain``), bits 3-4 preset,
            bits 5-7 LIC quality 0-6, or 7 = "a quality byte follows" (qualities 7-255)

What each byte buys, for a 64×64 image (9 bytes in all):

- ``IT`` + version (3): says what the file is and which layout follows; a foreign file
  or a future version gets its own error instead of a wrong decode.
- width and height (1 + 1; 2 each up to 16384 px): the decoder derives every latent
  shape from them, nothing else is stored about shapes.
- fields (1): which preset, rate point and caption method to decode with.
- fingerprint (1): the first byte of SHA-256(LIC fingerprint ‖ LMM fingerprint when the
  caption is LM-coded): the usual "other weights" case is refused before decoding.
- payload: one constriction range-coded stream, trimmed to the shortest prefix that
  decodes (``rangecoder.py``): the hyperlatents z, the latents y, then the caption
  (LM methods: its tokens under the LMM looking at the reconstruction, ended by EOS;
  other methods: a varint byte count and the method's bytes, 8 bits each). No lengths,
  no per-part flush.
- check (2): CRC-16/CCITT over the models' full fingerprints, every byte before it, the
  decoded caption (UTF-8) and the decoded reconstruction's pixels. It is verified after
  decoding, so it catches damaged files, other weights that share the fingerprint byte,
  and a decoder whose arithmetic differs from the encoder's (other platform or library
  versions) — never a silently wrong image or caption.

Version 1 (CompressAI's rANS strings, length-prefixed sections) is refused with a
"re-encode" error rather than decoded: its decoder is CompressAI's C++ rANS, which reads
past its buffer on crafted strings (a 64-byte file crashed it), and v1 had no release.

This module needs neither torch nor CompressAI: :func:`sizes` reads a file's fields
without any model (``itc inspect --sizes``). Decoding is bounded by the file: sides are
at most ``MAX_SIDE`` and pixels ``MAX_PIXELS``, and the payload's bits bound how much
the decoder decodes (``rangecoder.py``). Every way a file can be wrong has its own
exception, all subclasses of :class:`BitstreamError`.
"""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass

from .errors import ImageSizeError, ItcError

__all__ = [
    "MAGIC", "VERSION", "PRESET_CODES", "TEXT_METHODS", "MAX_SIDE", "MAX_PIXELS", "CHECK_BYTES", "ItcFile",
    "check_size", "varint", "header", "pack", "unpack", "sizes", "check_value", "model_fingerprint", "fingerprint_byte",
    "BitstreamError", "NotAnItcFile", "UnsupportedVersion", "TruncatedFile", "CorruptedFile", "ModelMismatch",
]

MAGIC = b"IT"
VERSION = 2
CHECK_BYTES = 2
MAX_SIDE = 1 << 14  # larger images are refused (tile them) rather than allocated
MAX_PIXELS = 1 << 24  # 16.8 megapixels, e.g. 4096×4096: what a decoder may be asked to allocate
PRESET_CODES = {"custom": 0, "tiny": 1, "laptop": 2, "paper": 3}
TEXT_METHODS = ("utf8", "zlib", "lzma", "rank-zlib", "lm-ac", "lmm-ac")  # codes 1-6; 0 = no caption
_QUALITY_BYTE = 7
_OUT_OF_DOMAIN = len(TEXT_METHODS) + 1  # the caption-method code of a file marked outside its preset's domain


class BitstreamError(ItcError):
    """Base of every ``.itc`` reading error."""


class NotAnItcFile(BitstreamError):
    """The data does not start with the ``IT`` magic."""


class UnsupportedVersion(BitstreamError):
    """The file's format version is not one this code reads."""


class TruncatedFile(BitstreamError):
    """The data ends before its header or check does."""


class CorruptedFile(BitstreamError):
    """The check does not match, a field holds an impossible value, or the payload does not decode."""


class ModelMismatch(BitstreamError):
    """The file was encoded with other weights than the ones loaded to decode it."""


@dataclass
class ItcFile:
    """The fields of an ``.itc`` file.

    Attributes:
        width, height: image size in pixels (unpadded).
        preset: preset name (``custom`` for a user YAML).
        quality: LIC rate point.
        text_method: caption coding method name, None when the file has no caption.
        fingerprint: one byte of the models' combined fingerprint (:func:`model_fingerprint`).
        payload: the range-coded stream.
        check: the CRC-16 stored at the end (verified by the decoder, :func:`check_value`).
        header_bytes: bytes before the payload.
        out_of_domain: no caption, because the encoder found the image outside its preset's ``domain``
            (the decoder's restorer then leaves it alone).
    """

    width: int
    height: int
    preset: str
    quality: int
    text_method: str | None
    fingerprint: int
    payload: bytes
    check: bytes = b"\0\0"
    header_bytes: int = 0
    out_of_domain: bool = False


def model_fingerprint(lic_fingerprint: str, lmm_fingerprint: str | None = None) -> bytes:
    """The full fingerprint of the models a file needs: the LIC's SHA-256 hex, plus the LMM's for LM methods."""
    return bytes.fromhex(lic_fingerprint) + (bytes.fromhex(lmm_fingerprint) if lmm_fingerprint else b"")


def fingerprint_byte(models: bytes) -> int:
    """The header's one-byte digest of :func:`model_fingerprint`."""
    return hashlib.sha256(models).digest()[0]


def check_value(models: bytes, body: bytes, caption: str | None, pixels: bytes) -> bytes:
    """CRC-16 over the models' fingerprint, the file before its check, the caption and the reconstruction."""
    crc = 0xFFFF
    for part in (models, body, b"" if caption is None else caption.encode("utf-8"), pixels):
        crc = binascii.crc_hqx(part, crc)
    return crc.to_bytes(CHECK_BYTES, "big")


def varint(n: int) -> bytes:
    """Unsigned LEB128 of ``n`` (the header's sizes; the byte count in front of a non-AC caption)."""
    if n < 0:
        raise ValueError(f"varint of a negative number {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def check_size(width: int, height: int) -> None:
    """Raise :class:`~itc_core.errors.ImageSizeError` for an image of a size no ``.itc`` file can hold."""
    _check_size(width, height, ImageSizeError)


def _check_size(width: int, height: int, error) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise error(f"image of {width}x{height} px: itc codes sides of 1-{MAX_SIDE} px and at most "
                    f"{MAX_PIXELS} pixels (tile larger images)")


def header(f: ItcFile) -> bytes:
    """The bytes before the payload."""
    _check_size(f.width, f.height, ImageSizeError)
    if f.preset not in PRESET_CODES:
        raise ValueError(f"unknown preset {f.preset!r}; valid: {', '.join(PRESET_CODES)}")
    if f.text_method is not None and f.text_method not in TEXT_METHODS:
        raise ValueError(f"unknown caption method {f.text_method!r}; valid: {', '.join(TEXT_METHODS)}")
    if not 0 <= f.quality < 256 or not 0 <= f.fingerprint < 256:
        raise ValueError(f"quality {f.quality} and fingerprint {f.fingerprint} must fit one byte each")
    if f.out_of_domain and f.text_method is not None:
        raise ValueError("an out-of-domain file stores no caption")
    method = _OUT_OF_DOMAIN if f.out_of_domain else 0 if f.text_method is None else TEXT_METHODS.index(f.text_method) + 1
    quality_field = min(f.quality, _QUALITY_BYTE)
    out = MAGIC + bytes([VERSION]) + varint(f.width - 1) + varint(f.height - 1)
    out += bytes([method | PRESET_CODES[f.preset] << 3 | quality_field << 5])
    if quality_field == _QUALITY_BYTE:
        out += bytes([f.quality])
    return out + bytes([f.fingerprint])


def pack(f: ItcFile) -> bytes:
    """Serialise ``f`` (its ``check`` as given); the inverse of :func:`unpack`."""
    if len(f.check) != CHECK_BYTES:
        raise ValueError(f"the check is {CHECK_BYTES} bytes")
    return header(f) + f.payload + f.check


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data) - CHECK_BYTES:
            raise TruncatedFile(f"file ends inside its header (at byte {len(self.data)})")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift >= 21:  # sides need at most 2 bytes; 3 are tolerated, more is garbage
                raise CorruptedFile("header: image size field too long")


def unpack(data: bytes) -> ItcFile:
    """Parse an ``.itc`` file's fields (structure only: the check needs the decoded content)."""
    data = bytes(data)
    if data[:2] != MAGIC:
        raise NotAnItcFile("not an .itc file (no 'IT' magic at the start)")
    if data[:4] == b"ITC\x01":
        raise UnsupportedVersion("this .itc file uses format version 1 (CompressAI's rANS strings), which this itc "
                                 "no longer decodes (its decoder is not memory-safe on untrusted files): re-encode "
                                 "the image with this itc")
    if len(data) < 3:
        raise TruncatedFile("file ends inside its header")
    if data[2] != VERSION:
        raise UnsupportedVersion(f".itc format version {data[2]}; this itc reads version {VERSION} (upgrade itc?)")
    r = _Reader(data)
    r.pos = 3
    width, height = r.varint() + 1, r.varint() + 1
    _check_size(width, height, CorruptedFile)
    fields = r.take(1)[0]
    method, preset_code, quality = fields & 0x7, fields >> 3 & 0x3, fields >> 5
    if quality == _QUALITY_BYTE:
        quality = r.take(1)[0]
        if quality < _QUALITY_BYTE:
            raise CorruptedFile("header: quality byte holds a quality the fields byte could")
    if method > _OUT_OF_DOMAIN:
        raise CorruptedFile(f"header: unknown caption method code {method}")
    fingerprint = r.take(1)[0]
    presets = {code: name for name, code in PRESET_CODES.items()}
    text_method = TEXT_METHODS[method - 1] if 0 < method <= len(TEXT_METHODS) else None
    return ItcFile(width, height, presets[preset_code], quality, text_method, fingerprint, data[r.pos:-CHECK_BYTES],
                   data[-CHECK_BYTES:], r.pos, method == _OUT_OF_DOMAIN)


def sizes(data: bytes) -> dict:
    """A file's fields and byte split, without any model (``itc inspect --sizes``); the check is not verified."""
    f = unpack(data)
    return {
        "version": VERSION, "width": f.width, "height": f.height, "preset": f.preset, "quality": f.quality,
        "text_method": f.text_method, "out_of_domain": f.out_of_domain, "fingerprint": f"{f.fingerprint:02x}",
        "bytes_header": f.header_bytes, "bytes_payload": len(f.payload), "bytes_check": CHECK_BYTES,
        "bytes_total": len(data), "bpp_total": 8 * len(data) / (f.width * f.height),
    }
