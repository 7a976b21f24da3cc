"""Resumable training state for the tiny-zoo recipes: atomic saves, ``weights_only`` loads."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["save_checkpoint", "load_checkpoint"]


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
