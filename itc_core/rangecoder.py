"""One range-coded stream (constriction) shared by every coded part of a file, with the coder's own accounting.

The image latents (integer tables) and the caption tokens (LMM probabilities)
are coded one after the other into the same ``constriction`` range coder,
flushed once, and the flush is trimmed to the shortest byte prefix that still
decodes (the decoder reads zeros past the end, so a shorter prefix is tried
first and kept when it reproduces every symbol).

Both sides count the information of every coded symbol, −log2 p under the
model that coded it, per section (``z``, ``y``, ``caption``). The encoder
guarantees ``info ≤ 8·len(bytes) + MARGIN_BITS`` (by construction of the
trimmed flush, and by zero padding should it ever fail), so the decoder can
stop with :class:`StreamError` as soon as the information it has decoded
exceeds that budget: a damaged or hostile stream cannot make the decoder run
longer than a valid stream of the same size. Past the end of its data,
constriction's decoder reads zeros forever; this budget is what ends it.

Symbols are ``np.int32`` and ``Categorical(perfect=False)`` is explicit on
both sides (constriction 0.5 defaults to the slow ``perfect=True``).
"""

from __future__ import annotations

from collections import defaultdict

import constriction
import numpy as np

from .errors import ItcError

__all__ = ["StreamEncoder", "StreamDecoder", "StreamError", "MARGIN_BITS", "MAX_ESCAPE_BITS"]

MARGIN_BITS = 64  # two 32-bit words of coder state: what a trimmed flush may leave to the decoder's implicit zeros
MAX_ESCAPE_BITS = 24  # escaped latent values (CompressAI's "overflow") up to ±2**23
_CHUNK_CELLS = 1 << 21  # rows × table width per constriction call: bounds memory for large images


class StreamError(ItcError):
    """The stream does not decode, or decodes to more information than its bytes can hold."""


def _categorical():
    return constriction.stream.model.Categorical(perfect=False)


def _info(probs: np.ndarray, symbols: np.ndarray) -> float:
    """Σ −log2 p(symbol) under the (row-normalised) ``probs``."""
    picked = probs[np.arange(len(symbols)), symbols]
    with np.errstate(divide="ignore"):
        return float(-(np.log2(picked) - np.log2(probs.sum(axis=1))).sum())


def _chunks(table: np.ndarray, rows: np.ndarray, widths: np.ndarray | None):
    """(slice, probabilities) pieces of ``table[rows]``, cut to the widest row of each piece (rows are zero-padded)."""
    step = max(1, _CHUNK_CELLS // table.shape[1])
    for start in range(0, len(rows), step):
        piece = rows[start:start + step]
        width = table.shape[1] if widths is None or not len(piece) else int(widths[piece].max())
        yield slice(start, start + step), np.ascontiguousarray(table[piece, :width])


class StreamEncoder:
    """Codes symbols into one range-coded stream; :meth:`finish` gives the trimmed bytes."""

    def __init__(self):
        self._coder = constriction.stream.queue.RangeEncoder()
        self._log = []  # (kind, symbols, table, rows | size): replayed to find the shortest decodable prefix
        self.info = defaultdict(float)

    def table(self, symbols: np.ndarray, table: np.ndarray, rows: np.ndarray, section: str,
              widths: np.ndarray | None = None) -> None:
        """Code ``symbols[i]`` with the distribution ``table[rows[i]]`` (a row of probabilities).

        ``widths[r]``: how many leading entries of row ``r`` can be nonzero (the rest is padding).
        """
        symbols = np.ascontiguousarray(symbols, dtype=np.int32)
        rows = np.asarray(rows)
        for where, probs in _chunks(table, rows, widths):
            self._coder.encode(symbols[where], _categorical(), probs)
            self.info[section] += _info(probs, symbols[where])
        self._log.append(("table", symbols, (table, widths), rows))

    def categorical(self, symbols: np.ndarray, probs: np.ndarray, section: str) -> None:
        """Code ``symbols[i]`` with the distribution ``probs[i]``."""
        self.table(symbols, probs, np.arange(len(probs)), section)

    def uniform(self, symbols: np.ndarray, size: int, section: str) -> None:
        """Code ``symbols`` (each in ``0..size-1``, size ≥ 2) at log2(size) bits each."""
        symbols = np.ascontiguousarray(symbols, dtype=np.int32)
        if len(symbols):
            self._coder.encode(symbols, constriction.stream.model.Uniform(size))
        self.info[section] += len(symbols) * float(np.log2(size))
        self._log.append(("uniform", symbols, size, None))

    def bytes(self, data: bytes, section: str) -> None:
        """Code raw bytes at 8 bits each."""
        self.uniform(np.frombuffer(data, dtype=np.uint8), 256, section)

    @property
    def info_bits(self) -> float:
        """Information of everything coded so far, in bits."""
        return sum(self.info.values())

    def _replays(self, data: bytes) -> bool:
        try:
            decoder = StreamDecoder(data, budget_bits=None)
            for kind, symbols, model, rows in self._log:
                got = (decoder.table(*model[:1], rows, "replay", model[1]) if kind == "table"
                       else decoder.uniform(model, len(symbols), "replay"))
                if not np.array_equal(got, symbols):
                    return False
            return True
        except Exception:  # constriction rejects some prefixes outright: that prefix simply does not work
            return False

    def finish(self) -> bytes:
        """The shortest byte prefix (or prefix + 1) of the flushed stream that decodes to every coded symbol."""
        full = self._coder.get_compressed().astype(">u4").tobytes()
        # The flush writes up to two words more than needed, and a prefix much shorter than the information
        # coded cannot decode: the shortest prefix lies in a few bytes around info / 8.
        start = max(0, len(full) - 8, int(self.info_bits - 24) // 8)
        for k in range(min(start, len(full)), len(full) + 1):
            head = int.from_bytes(full[:k], "big") if k else 0
            for value in (head, head + 1):
                if k and value >= 256 ** k:
                    continue
                candidate = value.to_bytes(k, "big") if k else b""
                if self._replays(candidate):
                    return self._within_budget(candidate)
        return self._within_budget(full)

    def _within_budget(self, data: bytes) -> bytes:
        # Zero bytes are what the decoder reads past the end anyway: appending them changes nothing it decodes.
        missing = self.info_bits - 8 * len(data) - MARGIN_BITS
        return data + bytes(max(0, int(np.ceil(missing / 8))))


class StreamDecoder:
    """Decodes what a :class:`StreamEncoder` coded, in the same order, within an information budget.

    Args:
        data: the stream's bytes.
        budget_bits: stop with :class:`StreamError` once decoded information exceeds this
            (default: ``8·len(data) + MARGIN_BITS``); None: no limit (the encoder's own replay).
    """

    def __init__(self, data: bytes, budget_bits: float | None = -1):
        padded = bytes(data) + bytes(-len(data) % 4) if data else bytes(4)
        self._coder = constriction.stream.queue.RangeDecoder(np.frombuffer(padded, dtype=">u4").astype(np.uint32))
        self.budget_bits = 8 * len(data) + MARGIN_BITS if budget_bits == -1 else budget_bits
        self.info = defaultdict(float)

    @property
    def info_bits(self) -> float:
        """Information of everything decoded so far, in bits."""
        return sum(self.info.values())

    def _spend(self, bits: float, section: str) -> None:
        if not np.isfinite(bits):
            raise StreamError(f"the {section} decodes to a symbol its model gives no probability")
        self.info[section] += bits
        if self.budget_bits is not None and self.info_bits > self.budget_bits:
            raise StreamError(f"the stream decodes to more information ({self.info_bits:.0f} bits by the end of "
                              f"the {section}) than its {self.budget_bits - MARGIN_BITS:.0f} bits can hold")

    def table(self, table: np.ndarray, rows: np.ndarray, section: str,
              widths: np.ndarray | None = None) -> np.ndarray:
        """Decode ``len(rows)`` symbols, symbol ``i`` with the distribution ``table[rows[i]]`` (``widths``: as coded)."""
        rows = np.asarray(rows)
        out = np.empty(len(rows), dtype=np.int32)
        for where, probs in _chunks(table, rows, widths):
            try:
                out[where] = self._coder.decode(_categorical(), probs)
            except (AssertionError, ValueError, RuntimeError) as err:  # constriction: "invalid compressed data"
                raise StreamError(f"the stream does not decode ({err})") from None
            if self.budget_bits is not None:
                self._spend(_info(probs, out[where]), section)
        return out

    def categorical(self, probs: np.ndarray, section: str) -> np.ndarray:
        """Decode ``len(probs)`` symbols, symbol ``i`` with the distribution ``probs[i]``."""
        return self.table(probs, np.arange(len(probs)), section)

    def uniform(self, size: int, n: int, section: str) -> np.ndarray:
        """Decode ``n`` symbols coded by :meth:`StreamEncoder.uniform`; the budget is checked before decoding."""
        self._spend(n * float(np.log2(size)), section)
        if not n:
            return np.empty(0, dtype=np.int32)
        try:
            return np.asarray(self._coder.decode(constriction.stream.model.Uniform(size), n), dtype=np.int32)
        except (AssertionError, ValueError, RuntimeError) as err:
            raise StreamError(f"the stream does not decode ({err})") from None

    def bytes(self, n: int, section: str) -> bytes:
        """Decode ``n`` raw bytes."""
        return self.uniform(256, n, section).astype(np.uint8).tobytes()
