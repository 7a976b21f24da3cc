"""Shared fixtures. Tests are offline (no hub), seeded and run on the CPU."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # make test runs one worker per core: keep their child processes
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # (kernels, CLI runs) from fighting over the cores

import pytest  # noqa: E402


def pytest_configure(config):
    """One torch thread in every process that runs tests. The xdist controller runs none: it skips importing torch
    (and through the fixtures below CompressAI), about 10 s before `make test` starts its workers."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """The notebooks first (half a minute each, in a kernel of their own): under `make test` (xdist, work
    stealing) one worker starts on them while the other takes the rest, and the suite ends on short tests
    instead of one worker finishing a notebook alone (the last minute ran on one core before, measured)."""
    items.sort(key=lambda item: item.path.name != "test_notebooks.py")


@pytest.fixture
def main_process_port() -> str:
    """A free TCP port for a multi-process launch: tests run side by side (xdist), and two launches on
    accelerate's default port 29500 meet in one rendezvous and hang."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@pytest.fixture
def communicate():
    """``communicate(proc, timeout)``: ``proc.communicate`` that, on a timeout, kills ``proc``'s whole process
    group (start it with ``start_new_session=True``): a hung launch must not leave mpirun's proxy or torchrun's
    workers busy after the test."""
    import signal
    import subprocess

    def run(proc, timeout):
        try:
            return proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return run


def random_lic_preset(directory, seed: int, name: str = "custom") -> str:
    """A user YAML preset over a small random-weight mbt2018-mean saved as safetensors; returns its path."""
    import torch
    import yaml
    from safetensors.torch import save_file

    from itc_core.image_codec import build_model

    torch.manual_seed(seed)
    net = build_model("mbt2018-mean", N=16, M=24)
    net.update(force=True)
    weights = directory / f"lic-{seed}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "base": "tiny",
        "image_codec": {"N": 16, "M": 24, "qualities": [1], "quality": 1, "weights": str(weights)},
        "caption": {"lmm": None, "method": "zlib"},  # image-only unless a test adds an LMM
    }))
    return str(path)


@pytest.fixture
def random_preset(tmp_path):
    """Path of a custom preset YAML with random LIC weights (seed 0)."""
    return random_lic_preset(tmp_path, seed=0)


def tiny_random_lmm(directory, seed: int = 0, kind: str = "llava"):
    """A tiny random LLaVA (or LLaVA-NeXT) with the byte-level tiny tokenizer, saved with save_pretrained; returns the dir."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextImageProcessor, LlavaNextProcessor, LlavaProcessor)

    from itc_core.tinyworld.tokenizer import train_tokenizer

    torch.manual_seed(seed)
    tok = train_tokenizer(vocab_size=320, n_captions=300)
    vision = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32,
                              num_hidden_layers=1, num_attention_heads=2)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=8192,
                       eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id, pad_token_id=tok.pad_token_id)
    image_token = tok.convert_tokens_to_ids("<image>")
    common = dict(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=image_token,
                  vision_feature_layer=-1, vision_feature_select_strategy="default")
    if kind == "llava":
        model = LlavaForConditionalGeneration(LlavaConfig(image_seq_length=16, **common))
        images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        processor = LlavaProcessor(image_processor=images, tokenizer=tok, patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    else:
        model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=[[32, 32], [32, 64]],
                                                                  image_seq_length=16, **common))
        images = LlavaNextImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                         image_grid_pinpoints=[[32, 32], [32, 64]])
        processor = LlavaNextProcessor(image_processor=images, tokenizer=tok, patch_size=8,
                                       vision_feature_select_strategy="default", num_additional_image_tokens=1)
    path = directory / f"{kind}-{seed}"
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def random_lmm_dir(tmp_path_factory):
    """A tiny random LLaVA folder, made once per test session."""
    return tiny_random_lmm(tmp_path_factory.mktemp("lmm"))
