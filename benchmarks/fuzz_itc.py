"""Fuzz the ``.itc`` decoder: byte-level and structure-aware mutations, each decoded in a child process.

    python benchmarks/fuzz_itc.py [--bytes 20000] [--structure 5000] [--workers 2] [--seed 0] [--json out.json]

A corpus of valid tiny-preset files (every rate point, with and without captions,
several caption methods) is mutated:

- byte level: bit flips, truncation, insertion, deletion, overwrites with edge
  values, splicing two files, random tails after a valid magic;
- structure aware: the file is parsed, its fields changed (size, quality, caption
  method, payload flipped / truncated / extended / replaced / taken from another
  file), and re-packed with the fingerprint byte right for the models (so the
  decoder runs instead of stopping at "other weights"). Version 2's check is
  verified *after* decoding, so every such case exercises the decoder itself;
  the report counts the cases refused only by the final check apart.

Decoding runs in long-lived worker processes that load the models once; a
worker that dies (signal) is a crash, one that exceeds ``--timeout`` a hang;
both are restarted. A library exception that is not an ``ItcError`` (which the
CLI would print as a traceback, not one ``itc: error:`` line) is counted as
``unclean``. ``--cli N`` also runs N cases through ``itc decode`` in fresh
processes and checks one error line and exit status 2. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EDGE = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
SIZES = (1, 2, 15, 63, 64, 65, 127, 128, 129, 200, 1000, 4096, 16384)


# ---------------------------------------------------------------- mutations (pure: bytes in, bytes out)

def mutate_bytes(data: bytes, other: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One byte-level mutation of ``data`` (``other``: a second file, for splicing)."""
    kind = rng.choice(["flip", "truncate", "insert", "delete", "overwrite", "splice", "tail"])
    b = bytearray(data)
    n = len(b)
    if kind == "flip":
        for _ in range(rng.integers(1, 9)):
            b[rng.integers(n)] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        del b[rng.integers(n):]
    elif kind == "insert":
        at = int(rng.integers(n + 1))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 17)), dtype=np.uint8).tobytes()
    elif kind == "delete":
        at = int(rng.integers(n))
        del b[at:at + int(rng.integers(1, 9))]
    elif kind == "overwrite":
        for _ in range(rng.integers(1, 5)):
            b[rng.integers(n)] = int(rng.choice(EDGE))
    elif kind == "splice":
        b = b[:rng.integers(n + 1)] + other[rng.integers(len(other) + 1):]
    else:  # a valid magic and version followed by noise
        b = bytearray(b"IT\x02") + rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8).tobytes()
    return str(kind), bytes(b)


def mutate_structure(data: bytes, other: bytes, rng: np.random.Generator, fingerprint_of) -> tuple[str, bytes]:
    """Parse ``data``, change fields and payload, re-pack with the right fingerprint byte.

    ``fingerprint_of(quality, method)`` gives the fingerprint byte of the loaded models (None: not offered).
    """
    from itc_core import bitstream

    f = bitstream.unpack(data)
    changes = []
    for field in rng.choice(["size", "quality", "method", "payload", "check"], size=int(rng.integers(1, 4)),
                            replace=False):
        changes.append(str(field))
        if field == "size":
            f.width, f.height = (int(rng.choice(SIZES)) for _ in range(2))
            if f.width * f.height > bitstream.MAX_PIXELS:
                f.height = max(1, bitstream.MAX_PIXELS // f.width)
        elif field == "quality":
            f.quality = int(rng.integers(1, 5)) if rng.random() < 0.9 else int(rng.integers(0, 256))
        elif field == "method":
            f.text_method = None if rng.random() < 0.2 else str(rng.choice(bitstream.TEXT_METHODS))
        elif field == "payload":
            f.payload = _mutate_payload(f.payload, bitstream.unpack(other).payload, rng)
        else:
            f.check = rng.integers(0, 256, 2, dtype=np.uint8).tobytes()
    fingerprint = fingerprint_of(f.quality, f.text_method)
    if fingerprint is not None:
        f.fingerprint = fingerprint
    return "+".join(sorted(changes)), bitstream.pack(f)


def _mutate_payload(payload: bytes, other: bytes, rng: np.random.Generator) -> bytes:
    kind = rng.integers(6)
    p = bytearray(payload)
    if kind == 0 and p:
        p[rng.integers(len(p))] ^= 1 << int(rng.integers(8))
    elif kind == 1:
        del p[rng.integers(len(p) + 1):]
    elif kind == 2:
        p += rng.integers(0, 256, int(rng.integers(1, 200)), dtype=np.uint8).tobytes()
    elif kind == 3:
        p = bytearray(rng.integers(0, 256, len(p), dtype=np.uint8).tobytes())
    elif kind == 4:
        p = bytearray(other)
    else:
        p = bytearray([int(rng.choice(EDGE))]) * int(rng.integers(0, 300))
    return bytes(p)


def handcrafted(valid: bytes, fingerprint_of) -> list[tuple[str, bytes]]:
    """The issue's forged files: a v1 header claiming 20000×20000, v2 sizes beyond and within the limits."""
    import binascii
    import struct

    from itc_core import bitstream

    v1 = bytearray(b"ITC\x01" + bitstream.varint(20000) * 2 + bytes([1, 1, 2]) + bytes(3))
    v1 += struct.pack(">H", binascii.crc_hqx(bytes(v1), 0xFFFF)) + b"\x10" + bytes(16) + b"\x08" + bytes(8) + bytes(2)
    out = [("v1-20000x20000", bytes(v1))]
    f = bitstream.unpack(valid)
    header = bitstream.header(f)
    out.append(("v2-20000x20000", header[:3] + bitstream.varint(19999) * 2 + header[5:] + f.payload + f.check))
    for w, h in ((4096, 4096), (16384, 1024), (1, 16384), (16384, 1)):
        f.width, f.height = w, h
        f.fingerprint = fingerprint_of(f.quality, f.text_method)
        out.append((f"v2-{w}x{h}", bitstream.pack(f)))
    return out


# ---------------------------------------------------------------- workers

def worker(conn) -> None:
    """Decode cases sent over ``conn`` with the tiny preset; answer (outcome, detail, seconds)."""
    import torch

    torch.set_num_threads(1)
    from itc_core import bitstream
    from itc_core.codec import ImageTextCodec
    from itc_core.errors import ItcError

    codec = ImageTextCodec.from_preset("tiny")
    for q in codec.config.image_codec.qualities:
        codec.image_codec(q)
    _ = codec.lmm.fingerprint
    conn.send("ready")
    while True:
        try:
            data = conn.recv()
        except EOFError:  # the driver has gone
            return
        start = time.perf_counter()
        try:
            codec.decode(data, restore=False)
            outcome, detail = "decoded", ""
        except bitstream.CorruptedFile as err:
            outcome, detail = "clean", "CorruptedFile:check" if "check fails" in str(err) else "CorruptedFile"
        except ItcError as err:
            outcome, detail = "clean", type(err).__name__
        except Exception as err:  # noqa: BLE001 - what the fuzzer is looking for
            outcome, detail = "unclean", f"{type(err).__name__}: {err}"[:200]
        conn.send((outcome, detail, time.perf_counter() - start))


class Pool:
    """Long-lived decoding workers, restarted after a crash or a hang."""

    def __init__(self, n: int, timeout: float):
        import multiprocessing

        self.ctx = multiprocessing.get_context("spawn")
        self.timeout = timeout
        self.workers = [self._start() for _ in range(n)]

    def _start(self):
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=worker, args=(child,), daemon=True)
        process.start()
        if parent.recv() != "ready":
            raise RuntimeError("worker failed to start")
        return process, parent

    def run(self, cases: list[tuple[str, str, bytes]], minutes: float | None = None,
            progress: bool = True) -> list[dict]:
        """Decode (mode, kind, data) cases, all or those started within ``minutes``; one record per case run."""
        results, pending, busy = [], list(enumerate(cases))[::-1], {}
        deadline = None if minutes is None else time.perf_counter() + 60 * minutes
        while pending or busy:
            if deadline is not None and time.perf_counter() > deadline:
                pending = []
            for w in range(len(self.workers)):
                if w not in busy and pending:
                    index, case = pending.pop()
                    self.workers[w][1].send(case[2])
                    busy[w] = (index, case, time.perf_counter())
            for w, (index, case, started) in list(busy.items()):
                process, conn = self.workers[w]
                record = None
                if conn.poll(0.002):
                    try:
                        outcome, detail, seconds = conn.recv()
                        record = {"outcome": outcome, "detail": detail, "seconds": seconds}
                    except EOFError:
                        pass
                if record is None and not process.is_alive():
                    record = {"outcome": "crash", "detail": f"exit {process.exitcode}",
                              "seconds": time.perf_counter() - started}
                elif record is None and time.perf_counter() - started > self.timeout:
                    process.kill()
                    record = {"outcome": "hang", "detail": f"> {self.timeout} s", "seconds": self.timeout}
                if record is None:
                    continue
                if record["outcome"] in ("crash", "hang"):
                    process.join()
                    self.workers[w] = self._start()
                record.update(index=index, mode=case[0], kind=case[1], bytes=len(case[2]))
                results.append(record)
                del busy[w]
                if progress and len(results) % 1000 == 0:
                    print(f"  {len(results)} / {len(cases)} cases", file=sys.stderr, flush=True)
        return sorted(results, key=lambda r: r["index"])

    def close(self) -> None:
        for process, _ in self.workers:
            process.kill()
            process.join()


# ---------------------------------------------------------------- corpus and driver

def make_corpus(n_scenes: int, seed: int):
    """Valid tiny-preset files (all qualities; no caption, lmm-ac, zlib, utf8, rank-zlib) and a fingerprint table."""
    import torch

    torch.set_num_threads(1)
    from itc_core import bitstream
    from itc_core.codec import ImageTextCodec
    from itc_core.tinyworld import sample, split_seeds

    codec = ImageTextCodec.from_preset("tiny")
    methods = [None, "lmm-ac", "lmm-ac", "zlib", "utf8", "rank-zlib", "lm-ac", "lzma"]
    corpus = []
    for i, s in enumerate(split_seeds("test", n_scenes, )):
        image, text = sample(s + seed)
        q = codec.config.image_codec.qualities[i % len(codec.config.image_codec.qualities)]
        method = methods[i % len(methods)]
        corpus.append(codec.encode(image, q, caption=text if method else False, method=method).data)
    table = {}
    for q in codec.config.image_codec.qualities:
        lic = codec.image_codec(q).fingerprint
        for method in (None,) + bitstream.TEXT_METHODS:
            lmm = codec.lmm.fingerprint if method in ("rank-zlib", "lm-ac", "lmm-ac") else None
            table[q, method] = bitstream.fingerprint_byte(bitstream.model_fingerprint(lic, lmm))
    return corpus, table


def make_cases(corpus, table, n_bytes: int, n_structure: int, seed: int) -> list[tuple[str, str, bytes]]:
    """Seeded cases: the valid files themselves, the handcrafted ones, byte-level and structure-aware mutations."""
    rng = np.random.default_rng(seed)

    def fingerprint_of(q, method):
        return table.get((q, method))
    cases = [("valid", "valid", d) for d in corpus]
    cases += [("handcrafted", kind, d) for kind, d in handcrafted(corpus[1], fingerprint_of)]
    n_fixed = len(cases)
    valid = set(corpus)
    for mode, n in (("bytes", n_bytes), ("structure", n_structure)):
        for _ in range(n):
            a, b = rng.choice(len(corpus), 2)
            kind, data = (mutate_bytes(corpus[a], corpus[b], rng) if mode == "bytes"
                          else mutate_structure(corpus[a], corpus[b], rng, fingerprint_of))
            cases.append((mode, kind + (" (= a valid file)" if data in valid else ""), data))
    # Valid and handcrafted cases first, then the mutations interleaved: a run cut short by --minutes
    # still holds both kinds in proportion.
    head, mutated = cases[:n_fixed], cases[n_fixed:]
    return head + [mutated[i] for i in rng.permutation(len(mutated))]


def cli_check(cases, n: int, seed: int) -> Counter:
    """Run ``n`` of the cases through ``itc decode`` in fresh processes: one error line and exit 2, or exit 0."""
    rng = np.random.default_rng(seed + 1)
    picked = [c for c in cases if c[0] == "handcrafted"]
    picked += [cases[i] for i in rng.choice(len(cases), max(0, n - len(picked)), replace=False)]
    counts = Counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (_, kind, data) in enumerate(picked):
            path = Path(tmp) / f"case{i}.itc"
            path.write_bytes(data)
            done = subprocess.run([sys.executable, "-m", "itc_core.cli", "decode", str(path), "-o",
                                   str(Path(tmp) / "out.png")], capture_output=True, text=True, env=env)
            lines = done.stderr.strip().splitlines()
            ok = (done.returncode == 0 or done.returncode == 2 and len(lines) == 1
                  and lines[0].startswith("itc: error:"))
            counts["ok" if ok else f"bad (exit {done.returncode}, {kind})"] += 1
    return counts


def summarise(results: list[dict]) -> dict:
    """Counts per mode and outcome, time per case, worst case against valid decodes."""
    out = {"cases": len(results)}
    for mode in ("valid", "handcrafted", "bytes", "structure"):
        rs = [r for r in results if r["mode"] == mode]
        if not rs:
            continue
        seconds = np.array([r["seconds"] for r in rs])
        out[mode] = {"cases": len(rs), "outcomes": dict(Counter(r["outcome"] for r in rs)),
                     "decoded_changed": sum(r["outcome"] == "decoded" and "= a valid" not in r["kind"] for r in rs),
                     "details": dict(Counter(r["detail"] for r in rs if r["outcome"] != "unclean").most_common(8)),
                     "unclean": [r["detail"] for r in rs if r["outcome"] == "unclean"][:10],
                     "seconds_mean": float(seconds.mean()), "seconds_p99": float(np.percentile(seconds, 99)),
                     "seconds_max": float(seconds.max())}
    valid = [r["seconds"] for r in results if r["mode"] == "valid"]
    worst = max(results, key=lambda r: r["seconds"])
    out["worst"] = {k: worst[k] for k in ("mode", "kind", "bytes", "outcome", "detail", "seconds")}
    out["valid_decode_seconds_median"] = float(np.median(valid))
    out["worst_over_valid_median"] = worst["seconds"] / float(np.median(valid))
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=20_000, help="byte-level cases")
    parser.add_argument("--structure", type=int, default=5_000, help="structure-aware cases")
    parser.add_argument("--corpus", type=int, default=16, help="valid files to mutate")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a case counts as a hang")
    parser.add_argument("--minutes", type=float, help="stop starting cases after this long (report what ran)")
    parser.add_argument("--cli", type=int, default=0, help="cases also run through `itc decode` in fresh processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the summary here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    corpus, table = make_corpus(args.corpus, args.seed)
    cases = make_cases(corpus, table, args.bytes, args.structure, args.seed)
    started = time.perf_counter()
    pool = Pool(args.workers, args.timeout)
    try:
        results = pool.run(cases, args.minutes)
    finally:
        pool.close()
    summary = summarise(results)
    summary["wall_seconds"] = time.perf_counter() - started
    if args.cli:
        summary["cli"] = dict(cli_check(cases, args.cli, args.seed))
    print(f"{summary['cases']} of {len(cases)} cases in {summary['wall_seconds']:.0f} s with {args.workers} workers")
    print(f"{'mode':<12} {'cases':>6} {'decoded':>8} {'clean':>7} {'unclean':>8} {'crash':>6} {'hang':>5} "
          f"{'mean s':>7} {'p99 s':>7} {'max s':>7}")
    for mode in ("valid", "handcrafted", "bytes", "structure"):
        if mode in summary:
            m, o = summary[mode], summary[mode]["outcomes"]
            print(f"{mode:<12} {m['cases']:>6} {o.get('decoded', 0):>8} {o.get('clean', 0):>7} "
                  f"{o.get('unclean', 0):>8} {o.get('crash', 0):>6} {o.get('hang', 0):>5} "
                  f"{m['seconds_mean']:7.3f} {m['seconds_p99']:7.3f} {m['seconds_max']:7.3f}")
            print(f"{'':<12} errors: {m['details']}")
            if mode in ("bytes", "structure"):
                print(f"{'':<12} decoded although different from every valid file: {m['decoded_changed']}")
            for line in m["unclean"]:
                print(f"{'':<12} unclean: {line}")
    w = summary["worst"]
    print(f"worst case: {w['seconds']:.3f} s ({w['mode']} {w['kind']}, {w['bytes']} bytes, {w['outcome']} "
          f"{w['detail']}); {summary['worst_over_valid_median']:.1f}x the median valid decode "
          f"({summary['valid_decode_seconds_median']:.3f} s)")
    if args.cli:
        print(f"itc decode in fresh processes: {summary['cli']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
