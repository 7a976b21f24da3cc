"""Start-up of each ``itc`` command, and many files coded one call per file against one batch call.

    python benchmarks/cli_latency.py [--scenes 100] [--single-calls K] [--repeats 3] [--threads N] [--json out.json]
                                     [--skip-startup]

Every command runs in a fresh process as ``python -m itc_core.cli`` (what the
``itc`` console script runs) with this checkout first on ``PYTHONPATH``.

1. Start-up: per command, the median wall time and peak memory of ``--repeats``
   runs, whether CompressAI was imported, and where the import time goes (one
   more run under ``python -X importtime``: all imports, and the cumulative
   seconds of a few heavy packages; importtime itself adds some overhead).
2. Batch: ``--scenes`` tiny-world scenes encoded with one ``itc encode DIR/ -o OUT/``
   call and with one ``itc encode`` call per file, then decoded the same two
   ways; the batch outputs must equal the per-file outputs byte for byte.
   ``--single-calls K`` times only K one-file calls and projects their mean.

Prints a table; this is a benchmark, not a test. Times depend on the machine's
load: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITC = [sys.executable, "-m", "itc_core.cli"]
CAPTION = "a small red star at the top on a striped blue background"


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run(args: list, importtime: bool = False) -> dict:
    """Run one ``itc`` command; wall seconds, peak memory (MiB, from wait4), exit status and stderr."""
    cmd = ITC[:1] + (["-X", "importtime"] if importtime else []) + ITC[1:] + [str(a) for a in args]
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    return {"wall_s": wall, "peak_mib": usage.ru_maxrss / 1024, "rc": proc.returncode, "stderr": stderr}


# Where start-up goes; each figure is that module's first import, nested ones included (torch._dynamo's
# seconds also count inside torchvision's or torch_geometric's, whichever imported it first).
KEY_MODULES = ("torch", "torch._dynamo", "torchvision", "scipy.stats", "transformers", "compressai",
               "torch_geometric", "constriction", "PIL.Image")


def import_breakdown(stderr: str) -> tuple[float, dict[str, float]]:
    """(all import seconds, {key module: cumulative seconds}) from ``-X importtime`` output."""
    total, seen = 0.0, {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith("  "):  # a top-level import (nested ones are indented)
            total += int(cumulative) / 1e6
        if name.strip() in KEY_MODULES:
            seen[name.strip()] = int(cumulative) / 1e6
    return total, seen


def startup(work: Path, repeats: int) -> list[dict]:
    """Median wall time, peak memory and import breakdown of each command on one scene."""
    from itc_core.tinyworld import sample

    png, itc_file = work / "scene.png", work / "scene.itc"
    sample(4_000_000)[0].save(png)
    assert run(["encode", png, "-o", itc_file])["rc"] == 0
    commands = {
        "--help": ["--help"],
        "inspect --sizes": ["inspect", "--sizes", itc_file],
        "inspect (full)": ["inspect", itc_file],
        "caption compress --method zlib": ["caption", "compress", CAPTION, "--method", "zlib"],
        "caption compress --method lm-ac": ["caption", "compress", CAPTION, "--method", "lm-ac"],
        "encode (1 file)": ["encode", png, "-o", work / "again.itc"],
        "decode (1 file)": ["decode", itc_file, "-o", work / "back.png"],
    }
    rows = []
    for name, args in commands.items():
        runs = [run(args) for _ in range(repeats)]
        if any(r["rc"] for r in runs):
            raise SystemExit(f"{name} failed: {runs[0]['stderr'].strip()}")
        total, imports = import_breakdown(run(args, importtime=True)["stderr"])
        rows.append({"command": name, "wall_s": statistics.median(r["wall_s"] for r in runs),
                     "peak_mib": statistics.median(r["peak_mib"] for r in runs),
                     "compressai": "compressai" in imports, "import_s": total, "imports": imports})
        print(f"{name:32s} {rows[-1]['wall_s']:6.2f} s {rows[-1]['peak_mib']:6.0f} MiB  compressai "
              f"{'yes' if 'compressai' in imports else 'no '}  imports {total:5.2f} s: "
              + ", ".join(f"{n} {s:.2f}" for n, s in imports.items()), flush=True)
    return rows


def _timed(label: str, commands: list[list]) -> float:
    t0 = time.perf_counter()
    for args in commands:
        r = run(args)
        if r["rc"]:
            raise SystemExit(f"{label}: {' '.join(map(str, args))} failed: {r['stderr'].strip()}")
    return time.perf_counter() - t0


def batch(work: Path, n: int, threads: int | None, single_calls: int | None = None) -> dict:
    """Encode then decode ``n`` scenes in one batch call and one call per file; check equal outputs.

    With ``single_calls`` below ``n``, only that many per-file calls are timed and their mean is
    projected to ``n`` files (printed as such): 100 fresh processes take long on a busy machine.
    """
    from itc_core.tinyworld import sample, split_seeds

    scenes = work / "scenes"
    scenes.mkdir()
    for i, seed in enumerate(split_seeds("test", n)):
        sample(seed)[0].save(scenes / f"s{i:03d}.png")
    pngs = sorted(scenes.glob("*.png"))
    single, many = work / "single", work / "batch"
    single.mkdir()
    opt = ["--threads", threads] if threads else []  # the same on both sides of the comparison
    k = min(single_calls or n, n)
    out = {"scenes": n, "single_calls": k, "threads": threads}
    out["encode_batch_s"] = _timed("encode", [["encode", scenes, "-o", f"{many}/", *opt]])
    out["encode_single_s"] = _timed("encode", [["encode", p, "-o", single / f"{p.stem}.itc", *opt] for p in pngs[:k]])
    itcs = sorted(single.glob("*.itc"))
    out["encode_identical"] = all(p.read_bytes() == (many / p.name).read_bytes() for p in itcs)
    out["decode_batch_s"] = _timed("decode", [["decode", many, "-o", f"{many}/", *opt]])
    out["decode_single_s"] = _timed("decode", [["decode", p, "-o", single / f"{p.stem}.png", *opt] for p in itcs])
    out["decode_identical"] = all((single / f"{p.stem}.png").read_bytes() == (many / f"{p.stem}.png").read_bytes()
                                  for p in itcs)
    for step in ("encode", "decode"):
        per_call = out[f"{step}_single_s"] / k
        ratio = out[f"{step}_batch_s"] / (per_call * n)
        out[f"{step}_ratio"] = ratio
        measured = f"{n} calls" if k == n else f"{k} calls measured, {per_call * n:.0f} s projected to {n}"
        print(f"{step} {n} scenes: {per_call:.2f} s per one-file call ({measured}); one batch call "
              f"{out[f'{step}_batch_s']:.1f} s ({out[f'{step}_batch_s'] / n:.3f} s a file): {100 * ratio:.1f} % "
              f"of the per-file time; outputs of the {k} per-file calls identical: {out[f'{step}_identical']}",
              flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100, help="scenes for the batch comparison (0: skip it)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command for the start-up medians")
    parser.add_argument("--threads", type=int, help="pass --threads N to every encode and decode of the batch part")
    parser.add_argument("--single-calls", type=int, help="time only this many one-file calls and project their "
                        "mean to --scenes (default: all)")
    parser.add_argument("--skip-startup", action="store_true", help="only the batch comparison")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start", flush=True)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_startup:
            result["startup"] = startup(Path(tmp), args.repeats)
        if args.scenes:
            result["batch"] = batch(Path(tmp), args.scenes, args.threads, args.single_calls)
    result["load_average_end"] = os.getloadavg()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at end")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
