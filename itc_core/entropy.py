"""The LIC's latents through the file's one range-coded stream, with CompressAI's own integer tables.

For a hyperprior model the stream holds, in decoding order, the hyperlatents
``z`` (the entropy bottleneck's table of each channel) and then the latents
``y`` (the Gaussian conditional's table picked by ``build_indexes(scales)``,
scales and means from ``h_s(ẑ)``); a factorized model codes ``y`` with its
bottleneck alone. The probabilities are the models' quantised CDFs
(``_quantized_cdf``, ``_cdf_length``, ``_offset``: 16-bit integers), so both
sides agree exactly; the symbols are CompressAI's (``quantize(·, "symbols",
means)``), so they match its ``compress`` one for one (a test checks it).
Values outside a table's range take its last entry (CompressAI's overflow
symbol) followed by ``raw`` = 2·excess (or −2·value−1 below the range), coded
as its bit length (uniform over 0..24) and its bits below the leading one.

Supported, by exact class: ``FactorizedPrior`` and ``FactorizedPriorReLU``
(bmshj2018-factorized), ``ScaleHyperprior`` (bmshj2018-hyperprior),
``MeanScaleHyperprior`` (mbt2018-mean). Autoregressive context models (mbt2018,
cheng2020-*) and any other class are refused with :class:`UnsupportedModel`:
their latents cannot be decoded in one batch, and subclasses may code
differently from what this module assumes.

Encoder and decoder run the same function (:meth:`LatentCoder._run`) on one
thread, the encoder writing symbols where the decoder reads them, so the
reconstruction both sides compute is identical bit for bit.
"""

from __future__ import annotations

import numpy as np
import torch
from compressai.models import FactorizedPrior, FactorizedPriorReLU, MeanScaleHyperprior, ScaleHyperprior

from .determinism import one_thread
from .errors import ConfigError
from .rangecoder import MAX_ESCAPE_BITS, MARGIN_BITS, StreamDecoder, StreamEncoder, StreamError

__all__ = ["LatentCoder", "UnsupportedModel", "SUPPORTED"]

SUPPORTED = {FactorizedPrior: "factorized", FactorizedPriorReLU: "factorized", ScaleHyperprior: "scale",
             MeanScaleHyperprior: "mean-scale"}
_STRIDE_Y, _STRIDE_Z = 16, 64


class UnsupportedModel(ConfigError):
    """A CompressAI model whose latents this coder cannot code (autoregressive or unknown)."""


class _Tables:
    """One entropy model's quantised CDFs as float64 pmf rows (zero-padded), with offsets and escape index."""

    def __init__(self, model):
        cdf = model._quantized_cdf.cpu().numpy().astype(np.int64)
        self.lengths = model._cdf_length.cpu().numpy().astype(np.int64)
        self.offsets = model._offset.cpu().numpy().astype(np.int64)
        if cdf.size == 0 or self.lengths.min() < 3:
            raise ConfigError("the LIC's CDF tables are empty: call update(force=True) before saving its weights")
        self.pmf = np.zeros((cdf.shape[0], cdf.shape[1] - 1))
        for row, n in enumerate(self.lengths):
            self.pmf[row, : n - 1] = np.diff(cdf[row, :n]) / 65536.0
        self.escape = self.lengths - 2  # index of the overflow entry: CompressAI's ``max_value``
        self.min_bits = -np.log2(self.pmf.max(axis=1))  # the cheapest symbol of each row

    def write(self, stream: StreamEncoder, symbols: np.ndarray, rows: np.ndarray, section: str) -> None:
        values = symbols.astype(np.int64) - self.offsets[rows]
        top = self.escape[rows]
        low, high = values < 0, values >= top
        raw = np.where(low, -2 * values - 1, 2 * (values - top))[low | high]
        if len(raw) and raw.max() >= 1 << MAX_ESCAPE_BITS:
            raise ConfigError(f"a latent of the LIC is too far outside its table to code (raw {raw.max()})")
        stream.table(np.where(low | high, top, values), self.pmf, rows, section, self.escape + 1)
        for r in raw.tolist():
            n = int(r).bit_length()
            stream.uniform(np.array([n]), MAX_ESCAPE_BITS + 1, section)
            _write_bits(stream, r - (1 << (n - 1)) if n else 0, n - 1, section)

    def read(self, stream: StreamDecoder, rows: np.ndarray, section: str) -> np.ndarray:
        values = stream.table(self.pmf, rows, section, self.escape + 1).astype(np.int64)
        top = self.escape[rows]
        if (values > top).any():
            raise StreamError("a latent decodes beyond its table")
        for i in np.flatnonzero(values == top).tolist():
            n = int(stream.uniform(MAX_ESCAPE_BITS + 1, 1, section)[0])
            raw = (1 << (n - 1)) + _read_bits(stream, n - 1, section) if n else 0
            values[i] = -(raw >> 1) - 1 if raw & 1 else (raw >> 1) + top[i]
        return values + self.offsets[rows]


def _write_bits(stream, value: int, n: int, section: str) -> None:
    while n > 0:
        k = min(n, 16)
        n -= k
        stream.uniform(np.array([(value >> n) & ((1 << k) - 1)]), 1 << k, section)


def _read_bits(stream, n: int, section: str) -> int:
    value = 0
    while n > 0:
        k = min(n, 16)
        n -= k
        value = value << k | int(stream.uniform(1 << k, 1, section)[0])
    return value


class LatentCoder:
    """Codes a supported CompressAI model's latents into a :mod:`~itc_core.rangecoder` stream.

    Args:
        net: the model, CDF tables built (``update()``), eval mode, on the CPU.
    """

    def __init__(self, net: torch.nn.Module):
        self.kind = SUPPORTED.get(type(net))
        if self.kind is None:
            raise UnsupportedModel(
                f"{type(net).__name__}: itc's one-stream coder supports {', '.join(c.__name__ for c in SUPPORTED)} "
                "(bmshj2018-factorized, bmshj2018-hyperprior, mbt2018-mean), not autoregressive context models "
                "(mbt2018, cheng2020-*) or other classes")
        self.net = net
        self.bottleneck = _Tables(net.entropy_bottleneck)
        self.gaussian = None if self.kind == "factorized" else _Tables(net.gaussian_conditional)

    def min_bits(self, height: int, width: int) -> float:
        """The fewest bits any latents of a padded ``height``×``width`` image can cost (decoder's size check)."""
        y_count = (height // _STRIDE_Y) * (width // _STRIDE_Y)
        if self.kind == "factorized":
            return y_count * float(self.bottleneck.min_bits.sum())
        z_count = (height // _STRIDE_Z) * (width // _STRIDE_Z)
        return (z_count * float(self.bottleneck.min_bits.sum())
                + y_count * int(self.net.M) * float(self.gaussian.min_bits.min()))

    def _bottleneck(self, io, name: str, v: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
        eb = self.net.entropy_bottleneck
        channels = self.bottleneck.pmf.shape[0]
        medians = eb._get_medians().detach().reshape(1, channels, 1, 1)
        rows = np.repeat(np.arange(channels), shape[0] * shape[1])
        symbols = None if v is None else eb.quantize(v, "symbols", medians)
        symbols = io(self.bottleneck, name, rows, symbols)
        return eb.dequantize(symbols.reshape(1, channels, *shape), medians)

    def _run(self, io, x: torch.Tensor | None, height: int, width: int) -> torch.Tensor:
        """z then y (or y alone), written or read by ``io``; returns the clamped padded reconstruction."""
        net = self.net
        y = None if x is None else net.g_a(x)
        y_shape = (height // _STRIDE_Y, width // _STRIDE_Y)
        if self.kind == "factorized":
            return net.g_s(self._bottleneck(io, "y", y, y_shape)).clamp_(0, 1)
        z = None if y is None else net.h_a(y if self.kind == "mean-scale" else torch.abs(y))
        z_hat = self._bottleneck(io, "z", z, (height // _STRIDE_Z, width // _STRIDE_Z))
        params = net.h_s(z_hat)
        scales, means = params.chunk(2, 1) if self.kind == "mean-scale" else (params, None)
        indexes = net.gaussian_conditional.build_indexes(scales)
        symbols = None if y is None else net.gaussian_conditional.quantize(y, "symbols", means)
        symbols = io(self.gaussian, "y", indexes.reshape(-1).numpy().astype(np.int64), symbols)
        y_hat = net.gaussian_conditional.dequantize(symbols.reshape(indexes.shape), means, z_hat.dtype)
        return net.g_s(y_hat).clamp_(0, 1)

    @torch.no_grad()
    def encode(self, stream: StreamEncoder, x: torch.Tensor) -> torch.Tensor:
        """Code the padded image ``x`` (1, 3, H, W), H and W multiples of 64; returns the decoder's reconstruction."""
        def write(tables, name, rows, symbols):
            tables.write(stream, symbols.reshape(-1).numpy(), rows, name)
            return symbols
        with one_thread():
            return self._run(write, x, x.shape[2], x.shape[3])

    @torch.no_grad()
    def decode(self, stream: StreamDecoder, height: int, width: int) -> torch.Tensor:
        """The padded reconstruction (1, 3, height, width) coded in ``stream``.

        Raises :class:`~itc_core.rangecoder.StreamError` before any model computation when the
        stream's budget cannot hold the cheapest latents of that size, and while decoding
        when the decoded information exceeds it.
        """
        needed = self.min_bits(height, width)
        if stream.budget_bits is not None and needed > stream.budget_bits:
            raise StreamError(f"a {width}x{height} image needs at least {needed:.0f} bits of latents, the file holds "
                              f"{stream.budget_bits - MARGIN_BITS:.0f}")

        def read(tables, name, rows, _):
            return torch.from_numpy(tables.read(stream, rows, name).astype(np.int32))
        with one_thread():
            return self._run(read, None, height, width)
