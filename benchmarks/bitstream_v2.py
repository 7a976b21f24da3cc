"""Format v2 against v1: bytes per file, real vs estimated bits, caption framing, timings, thread determinism.

    python benchmarks/bitstream_v2.py [--scenes 100] [--determinism 200] [--json out.json]

On held-out tiny-world test scenes, at every rate point of the preset:

- bytes per file, v1 (CompressAI's rANS strings in v1's container: 14 header
  bytes + a length byte per string + CRC-16, and for a caption CRC-32 + length +
  CRC-16 + 2 bytes of LMM id around the standalone ``lmm-ac`` payload) against
  v2 (one stream, 9-byte header+check), without and with the scene's caption;
- real payload bits of the image-only v2 file against the model's estimate
  (Σ −log2 likelihoods of ``forward()``): share of files within 2 % + 16 bits;
- the caption's framing in v2: (bytes with caption − bytes without) − the
  caption's NLL in bytes;
- encode and decode time, one thread: v1 = CompressAI ``compress`` (+ the
  encoder's own ``decompress``) / ``decompress``; v2 = ``ImageTextCodec.encode`` /
  ``decode`` without caption (header, stream, trimming, check included);
- determinism: files with captions encoded in a fresh process with 2 torch
  threads, decoded in fresh processes with 1 and 4 threads: identical
  reconstructions and captions.

Prints tables; this is a benchmark, not a test. Rerun it after the LIC changes.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from itc_core.caption_codec import compress_caption  # noqa: E402
from itc_core.codec import ImageTextCodec  # noqa: E402
from itc_core.data import image_to_tensor  # noqa: E402
from itc_core.tinyworld import sample, split_seeds  # noqa: E402


def v1_bytes(strings: list[bytes], caption_payload: bytes | None) -> int:
    """Size of the same content in format v1 (its layout, from the v1 ``bitstream.py`` docstring)."""
    def varint_len(n):
        return max(1, (n.bit_length() + 6) // 7)
    size = 14 + sum(varint_len(len(s)) + len(s) for s in strings) + 2
    if caption_payload is not None:
        text = 2 + len(caption_payload)  # the LMM id prefix, then the payload
        size += 4 + varint_len(text) + text + 2
    return size


def rate_table(codec, n: int, timed: int) -> dict:
    """Bytes and bits on ``n`` scenes per rate point; timings and the captioned decode on the first ``timed``."""
    rows = {}
    seeds = split_seeds("test", n)
    for q in codec.config.image_codec.qualities:
        lic = codec.image_codec(q)
        r = {k: [] for k in ("v1", "v1_caption", "v2", "v2_caption", "real_bits", "estimated_bits", "framing",
                             "t_v1_enc", "t_v1_dec", "t_v2_enc", "t_v2_dec", "t_v2_enc_caption", "t_v2_dec_caption")}
        for i, seed in enumerate(seeds):
            image, text = sample(seed)
            x = image_to_tensor(image)
            t = time.perf_counter()
            old = lic.compress(x)
            lic.decompress(old.strings, old.height, old.width)  # the v1 encoder decoded its own strings
            r["t_v1_enc"].append(time.perf_counter() - t)
            t = time.perf_counter()
            lic.decompress(old.strings, old.height, old.width)
            r["t_v1_dec"].append(time.perf_counter() - t)
            t = time.perf_counter()
            plain = codec.encode(image, q, caption=False)
            r["t_v2_enc"].append(time.perf_counter() - t)
            t = time.perf_counter()
            codec.decode(plain.data, restore=False)
            r["t_v2_dec"].append(time.perf_counter() - t)
            t = time.perf_counter()
            captioned = codec.encode(image, q, caption=text, method="lmm-ac")
            r["t_v2_enc_caption"].append(time.perf_counter() - t)
            if i < timed:
                t = time.perf_counter()
                assert codec.decode(captioned.data, restore=False).caption == text
                r["t_v2_dec_caption"].append(time.perf_counter() - t)
            standalone = compress_caption(text, "lmm-ac", codec.lmm, plain.reconstruction)
            r["v1"].append(v1_bytes(old.strings, None))
            r["v1_caption"].append(v1_bytes(old.strings, standalone.data))
            r["v2"].append(len(plain.data))
            r["v2_caption"].append(len(captioned.data))
            r["real_bits"].append(plain.bits["z"] + plain.bits["y"] + plain.bits["termination"])  # the payload's bits
            r["estimated_bits"].append(sum(old.estimated_bits))
            r["framing"].append(len(captioned.data) - len(plain.data) - captioned.caption_payload.nll_bits / 8)
        rows[q] = {k: np.array(v) for k, v in r.items()}
    return rows


def report(rows: dict) -> dict:
    out = {}
    print(f"{'q':>2} {'v1 B':>7} {'v2 B':>7} {'v2/v1':>6} {'v1+cap':>7} {'v2+cap':>7} {'v2/v1':>6} "
          f"{'framing B mean/max':>19} {'real/est bits':>14} {'≤2%+16b':>8} {'worst excess b':>15}")
    for q, r in rows.items():
        real, est = r["real_bits"], r["estimated_bits"]
        within = real <= 1.02 * est + 16
        excess = real - est
        row = {"v1_bytes": r["v1"].mean(), "v2_bytes": r["v2"].mean(), "ratio": r["v2"].mean() / r["v1"].mean(),
               "v1_caption_bytes": r["v1_caption"].mean(), "v2_caption_bytes": r["v2_caption"].mean(),
               "ratio_caption": r["v2_caption"].mean() / r["v1_caption"].mean(),
               "framing_bytes_mean": r["framing"].mean(), "framing_bytes_max": r["framing"].max(),
               "real_bits": real.mean(), "estimated_bits": est.mean(), "within_2pct_16bits": float(within.mean()),
               "worst_excess_bits": float(excess.max()),
               **{k: float(np.mean(r[k]) * 1000) for k in r if k.startswith("t_")}}
        out[q] = row
        print(f"{q:>2} {row['v1_bytes']:7.1f} {row['v2_bytes']:7.1f} {row['ratio']:6.1%} {row['v1_caption_bytes']:7.1f} "
              f"{row['v2_caption_bytes']:7.1f} {row['ratio_caption']:6.1%} {row['framing_bytes_mean']:9.2f} / "
              f"{row['framing_bytes_max']:5.2f} {row['real_bits']:6.1f}/{row['estimated_bits']:6.1f} "
              f"{row['within_2pct_16bits']:8.0%} {row['worst_excess_bits']:15.1f}")
    print(f"\n{'q':>2} {'v1 enc ms':>10} {'v1 dec ms':>10} {'v2 enc ms':>10} {'v2 dec ms':>10} "
          f"{'v2 enc+cap ms':>14} {'v2 dec+cap ms':>14}   (one thread)")
    for q, row in out.items():
        print(f"{q:>2} {row['t_v1_enc']:10.1f} {row['t_v1_dec']:10.1f} {row['t_v2_enc']:10.1f} {row['t_v2_dec']:10.1f} "
              f"{row['t_v2_enc_caption']:14.1f} {row['t_v2_dec_caption']:14.1f}")
    return out


# ---------------------------------------------------------------- determinism in fresh processes

def child(mode: str, folder: str, n: int, threads: int) -> None:
    """Encode (``mode=encode``) or decode ``n`` files in ``folder`` with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    codec = ImageTextCodec.from_preset("tiny")
    qualities = codec.config.image_codec.qualities
    results = {}
    for i, seed in enumerate(split_seeds("test", n)):
        path = Path(folder) / f"{i}.itc"
        if mode == "encode":
            image, text = sample(seed)
            result = codec.encode(image, qualities[i % len(qualities)], caption=text)
            path.write_bytes(result.data)
            image, caption = result.reconstruction, result.caption
        else:
            try:
                decoded = codec.decode(path.read_bytes(), restore=False)
                image, caption = decoded.image, decoded.caption
            except Exception as err:  # noqa: BLE001 - a failed decode is a determinism failure, counted
                results[i] = f"error: {err}"
                continue
        results[i] = hashlib.sha256(image.tobytes()).hexdigest() + base64.b64encode(caption.encode()).decode()
    (Path(folder) / f"{mode}-{threads}.json").write_text(json.dumps(results))


def determinism(n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with tempfile.TemporaryDirectory() as folder:
        runs = [("encode", 2), ("decode", 1), ("decode", 4)]
        for mode, threads in runs:
            subprocess.run([sys.executable, __file__, "--child", mode, folder, str(n), str(threads)],
                           check=True, env=dict(env, OMP_NUM_THREADS=str(threads)))
        expected = json.loads((Path(folder) / "encode-2.json").read_text())
        out = {}
        for mode, threads in runs[1:]:
            got = json.loads((Path(folder) / f"{mode}-{threads}.json").read_text())
            out[f"decode_{threads}_threads"] = sum(got[k] == v for k, v in expected.items())
    print(f"\ndeterminism: {n} files with captions encoded with 2 threads; identical decodes: "
          + ", ".join(f"{k} {v}/{n}" for k, v in out.items()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="scenes for the byte counts (0: skip)")
    parser.add_argument("--timed", type=int, default=100, help="of which decoded with their caption and timed")
    parser.add_argument("--determinism", type=int, default=200, help="files with captions (0: skip)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, n, threads = args.child
        return child(mode, folder, int(n), int(threads))
    torch.set_num_threads(1)
    codec = ImageTextCodec.from_preset(args.preset)
    summary = {"rates": report(rate_table(codec, args.scenes, args.timed))} if args.scenes else {}
    if args.determinism:
        summary["determinism"] = determinism(args.determinism)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
