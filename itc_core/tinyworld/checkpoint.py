"""Shared machinery of the tiny-zoo recipes: resumable training state (atomic saves, ``weights_only`` loads)
and the ``python -m`` entry points' recipe flags."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import torch

__all__ = ["command_line", "save_checkpoint", "load_checkpoint", "files_tag", "lic_config", "lic_files", "add_recipe_arguments",
           "recipe_from_arguments"]


def command_line() -> str:
    """This process's own command line, as a report records it (``itc tiny-zoo --only referee --steps 3``,
    ``python -m itc_core.tinyworld.train_lmm …``), never a command that did not run."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name != "__main__" else [Path(sys.argv[0]).name]
    return shlex.join(head + sys.argv[1:])


def save_checkpoint(path: Path, step: int, gen: torch.Generator, **parts) -> None:
    """Save the ``state_dict`` of each named part, the data generator and ``step``; never a half-written file."""
    state = {name: part.state_dict() for name, part in parts.items()}
    state.update(gen=gen.get_state(), step=step)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, gen: torch.Generator, **parts) -> int:
    """Restore the named parts and the generator from ``path``; returns the step to resume at (0 if none)."""
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    gen.set_state(state["gen"])
    return int(state["step"])


def files_tag(files) -> str:
    """``-<12 hex>``: SHA-256 over the names and bytes of ``files`` (upstream weights), for the names of the
    caches and checkpoints that depend on them, so that retrained weights start afresh instead of resuming.
    Folders do not count: the same files reached by another path give the same tag."""
    import hashlib

    def file_digest(path: Path) -> str:
        digest = hashlib.sha256()
        with Path(path).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    digest = hashlib.sha256()
    for name, content in sorted((Path(f).name, file_digest(f)) for f in files):
        digest.update(f"{name}\0{content}\n".encode())
    return "-" + digest.hexdigest()[:12]


def lic_config(preset: str, lic_dir: Path | None = None):
    """The ``image_codec`` config of ``preset``, its weights read from ``lic_dir`` when given (a retrained LIC
    that downstream stages train on)."""
    from ..config import load_config

    cfg = load_config(preset).image_codec
    if lic_dir is not None:
        cfg.weights = str(Path(lic_dir).resolve() / Path(cfg.weights).name)
        manifest = Path(lic_dir) / "manifest.json"
        for q, entry in (json.loads(manifest.read_text())["models"].items() if manifest.is_file() else ()):
            given = dict(zip(("N", "M"), cfg.size(int(q))))  # the preset's widths for this point
            own = {k: entry[k] for k in ("N", "M") if entry.get(k) is not None and entry[k] != given[k]}
            if own:  # a retrained point's own widths (e.g. a top point with more latent channels)
                cfg.sizes = {**cfg.sizes, int(q): {**cfg.sizes.get(int(q), {}), **own}}
    return cfg


def lic_files(lic_cfg) -> list[Path]:
    """The weight files of every rate point of an ``image_codec`` config."""
    from ..config import resolve_path

    return [resolve_path(lic_cfg.weights.format(quality=q)) for q in lic_cfg.qualities]


def add_recipe_arguments(parser, recipe_cls) -> None:
    """One ``--field value`` flag per field of the recipe dataclass ``recipe_cls``, defaulting to the recipe's."""
    from dataclasses import fields

    import argparse

    for f in fields(recipe_cls):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):  # --flag / --no-flag (type=bool would read "False" as true)
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        elif isinstance(f.default, tuple):  # comma-separated, e.g. --channels 64,128,128
            parser.add_argument(flag, type=lambda text, kind=type(f.default[0]): tuple(kind(v) for v in text.split(",")),
                                default=f.default)
        elif f.default is None:  # optional numbers, e.g. max_minutes: float | None
            kind = {"int": int, "float": float}.get(str(f.type).split("|")[0].strip(), str)
            parser.add_argument(flag, type=kind, default=None)
        else:
            parser.add_argument(flag, type=type(f.default), default=f.default)


def recipe_from_arguments(args, recipe_cls):
    """The ``recipe_cls`` instance that the flags of :func:`add_recipe_arguments` describe."""
    from dataclasses import fields

    return recipe_cls(**{f.name: getattr(args, f.name) for f in fields(recipe_cls)})
