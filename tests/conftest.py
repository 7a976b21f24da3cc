"""Shared fixtures. Tests are offline (no hub), seeded and run on the CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from itc_core.image_codec import build_model  # noqa: E402

torch.set_num_threads(1)


def random_lic_preset(directory, seed: int, name: str = "custom") -> str:
    """A user YAML preset over a small random-weight mbt2018-mean saved as safetensors; returns its path."""
    torch.manual_seed(seed)
    net = build_model("mbt2018-mean", N=16, M=24)
    net.update(force=True)
    weights = directory / f"lic-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "base": "tiny",
        "image_codec": {"N": 16, "M": 24, "qualities": [1], "quality": 1, "weights": str(weights)},
    }))
    return str(path)


@pytest.fixture
def random_preset(tmp_path):
    """Path of a custom preset YAML with random LIC weights (seed 0)."""
    return random_lic_preset(tmp_path, seed=0)
