"""The learned image codec (LIC) stage: any CompressAI image model behind one small API.

    codec = ImageCodec.from_config(load_config("tiny").image_codec, quality=1)
    stream = StreamEncoder()
    x_hat = codec.encode_to(stream, x)          # x: (1, 3, H, W) float in [0, 1], any H, W
    x_hat = codec.decode_from(StreamDecoder(stream.finish()), H, W)   # the same tensor, bit for bit

``encode_to``/``decode_from`` code the latents into the file's one range-coded
stream (``entropy.py``: memory-safe, bounded by the stream's size); that is the
path of ``.itc`` files. ``compress``/``decompress`` are CompressAI's own rANS
strings, kept as a cross-check and for the tiny-zoo training report: never
give ``decompress`` untrusted strings (CompressAI's C++ decoder reads past its
buffer on crafted ones). Both pad to the model's multiple of 64 (replicate
padding, centred as in ``compressai.ops.compute_padding``) and crop back.
Quality is always measured on the decoded output: for autoregressive models
``forward()``'s ``x_hat`` is not what the decoder sees.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from compressai.ops import compute_padding
from compressai.zoo import image_models
from compressai.zoo.image import model_architectures

from .config import ImageCodecConfig, data_dir, resolve_path
from .determinism import one_thread
from .entropy import LatentCoder
from .errors import ConfigError, WeightsError
from .rangecoder import StreamDecoder, StreamEncoder

__all__ = ["ImageCodec", "LicPayload", "build_model", "load_weights", "state_fingerprint", "strip_gaussian_tables",
           "widen_latents", "ARCHITECTURES"]

ARCHITECTURES = tuple(model_architectures)
PAD_MULTIPLE = 64  # total stride of g_a (16) times h_a (4) in every zoo hyperprior model


@dataclass
class LicPayload:
    """The entropy-coded image: one bytes string per latent (e.g. ``y`` then ``z``) and the image size.

    Attributes:
        strings: the coded latents, in the order ``decompress`` wants them.
        names: the latent of each string (``"y"``, ``"z"``).
        height, width: the unpadded image size in pixels.
        estimated_bits: per string, the model's −log2 likelihood (what training optimises).
    """

    strings: list[bytes]
    names: list[str]
    height: int
    width: int
    estimated_bits: list[float]

    @property
    def bits(self) -> int:
        """Real size of all strings, in bits."""
        return 8 * sum(len(s) for s in self.strings)

    @property
    def bpp(self) -> float:
        """Real bits per pixel of the unpadded image (strings only, no container)."""
        return self.bits / (self.height * self.width)


def build_model(architecture: str, quality: int = 1, *, pretrained: bool = False, metric: str = "mse",
                N: int | None = None, M: int | None = None) -> torch.nn.Module:
    """A CompressAI model by zoo name: zoo-sized for ``quality``, or custom-sized when N and M are given."""
    if architecture not in model_architectures:
        raise ConfigError(f"unknown LIC architecture {architecture!r}; valid: {', '.join(ARCHITECTURES)}")
    if N is not None or M is not None:
        if pretrained:
            raise ConfigError("custom N/M cannot load zoo weights: set pretrained: false and give weights")
        sizes = {"N": N} if M is None else {"N": N, "M": M}
        return model_architectures[architecture](**sizes)
    try:
        return image_models[architecture](quality=quality, metric=metric, pretrained=pretrained, progress=False)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise WeightsError(
            f"could not fetch CompressAI zoo weights for {architecture} q{quality} ({err}); "
            "this needs the internet once, or give a local checkpoint in image_codec.weights"
        ) from None
    except ValueError as err:
        raise ConfigError(f"{architecture}: {err}") from None


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(f"LIC weights not found: {path} (relative paths in presets and run YAMLs start at the "
                           f"data directory {data_dir()}; the tiny preset's weights come with the repository, "
                           "`itc tiny-zoo --only lic` retrains them)")
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open
            from safetensors.torch import load_file
            with safe_open(str(path), "pt") as f:
                metadata = f.metadata() or {}
            state = load_file(str(path))
        else:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors and torch raise many types for a bad file
        raise WeightsError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if path.suffix == ".safetensors":
        return _rebuild_gaussian_tables(state, metadata, path)
    for key in ("network", "state_dict", "model_state_dict", "model"):
        if isinstance(ckpt, dict) and isinstance(ckpt.get(key), dict):
            ckpt = ckpt[key]
    return {k.removeprefix("module."): v for k, v in ckpt.items()}


GAUSSIAN_TABLES = ("_quantized_cdf", "_offset", "_cdf_length")


def _tables_sha256(state: dict[str, torch.Tensor], prefix: str) -> str:
    digest = hashlib.sha256()
    for name in GAUSSIAN_TABLES:
        digest.update(state[f"{prefix}.{name}"].contiguous().numpy().tobytes())
    return digest.hexdigest()


def strip_gaussian_tables(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``state`` without the CDF tables of its GaussianConditional modules, and their SHA-256 per module.

    CompressAI derives those tables from the scale table alone (0.8 MB, the same for every model with the
    default table), so a shipped file leaves them out and records their checksum as safetensors metadata;
    :func:`load_weights` rebuilds them and refuses a platform that builds other ones.
    """
    prefixes = [k.removesuffix(".scale_table") for k in state if k.endswith(".scale_table")
                and all(f"{k.removesuffix('.scale_table')}.{n}" in state for n in GAUSSIAN_TABLES)]
    checksums = {f"{p}.tables_sha256": _tables_sha256(state, p) for p in prefixes}
    dropped = {f"{p}.{n}" for p in prefixes for n in GAUSSIAN_TABLES}
    return {k: v for k, v in state.items() if k not in dropped}, checksums


def _rebuild_gaussian_tables(state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> dict:
    """Put back the tables :func:`strip_gaussian_tables` left out, checked against the recorded SHA-256."""
    from compressai.entropy_models import GaussianConditional

    for key, expected in metadata.items():
        prefix = key.removesuffix(".tables_sha256")
        if not key.endswith(".tables_sha256") or f"{prefix}.scale_table" not in state:
            continue
        conditional = GaussianConditional(None)
        conditional.update_scale_table(state[f"{prefix}.scale_table"], force=True)
        for name in GAUSSIAN_TABLES:
            state[f"{prefix}.{name}"] = getattr(conditional, name).clone()
        if _tables_sha256(state, prefix) != expected:
            raise WeightsError(f"{path}: the CDF tables rebuilt for {prefix} differ from the checksum the file "
                               "records (a damaged file, or this platform's floating-point maths builds other "
                               "tables: files coded here would not decode elsewhere)")
    return state


def load_weights(net: torch.nn.Module, path: str | Path, widen: bool = False) -> None:
    """Load a safetensors or ``torch.load(weights_only=True)`` checkpoint into ``net``; wrong weights raise WeightsError.

    ``widen``: the checkpoint may have fewer latent channels (M) than ``net`` (see :func:`widen_latents`).
    """
    state = _read_state_dict(Path(path))
    if widen:
        state = widen_latents(net, state, path)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise WeightsError(f"{path}: weights do not fit {type(net).__name__} ({first[1].strip() if len(first) > 1 else first[0]})") from None


def widen_latents(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path = "checkpoint") -> dict:
    """``state``, a mbt2018-mean with fewer latent channels M than ``net``, laid out for ``net`` (Net2Net-style).

    The old weights fill the leading slices. The new latent channels are made by ``net``'s fresh initial
    weights scaled down (the analysis transform's last layer), predicted as zero-mean with the smallest
    scale (the hyper-synthesis outputs), and read with zeros (the synthesis transform's and the
    hyper-analysis's first layers, the hyper-synthesis's inner layers): the widened model reconstructs
    exactly as the narrow one, codes the same hyper-latents and spends next to no bits on the new
    channels until training gives them a use. A rate point that the narrow model cannot reach (its rate
    saturates as λ grows) starts from the best narrow point this way.
    """
    from compressai.models import MeanScaleHyperprior

    if type(net) is not MeanScaleHyperprior:
        raise WeightsError(f"{source}: widening the latents is implemented for mbt2018-mean, not {type(net).__name__}")
    fresh = net.state_dict()
    old_m, new_m = state["g_a.6.weight"].shape[0] if "g_a.6.weight" in state else None, net.M
    if old_m is None or old_m > new_m or state["g_a.6.weight"].shape[1:] != fresh["g_a.6.weight"].shape[1:]:
        raise WeightsError(f"{source}: cannot widen to M={new_m}, N={net.N}: the checkpoint is not a mbt2018-mean "
                           "of the same N with at most as many latent channels")
    reads = {"g_s.0": 0, "h_a.0": 1, "h_s.2": 0, "h_s.4": 1}  # layer: its weight's input dim (ConvTranspose: 0)
    out = {}
    for key, new in fresh.items():
        old = state.get(key)
        if old is None:
            continue  # load_state_dict names what is missing
        if old.shape == new.shape or not key.startswith(("g_a.6.", "g_s.0.", "h_a.0.", "h_s.")):
            out[key] = old  # (the entropy models' tables are sized when loaded)
            continue
        if old.dim() != new.dim() or any(o > n for o, n in zip(old.shape, new.shape)):
            raise WeightsError(f"{source}: {key} has shape {tuple(old.shape)}, which does not widen to {tuple(new.shape)}")
        wide = new.clone().to(old.dtype)
        if key.startswith("h_s.4."):  # (scales, means) of M channels each, chunked along dim 0
            rest = tuple(slice(0, n) for n in old.shape[1:])
            wide[(slice(0, old_m),) + rest], wide[(slice(new_m, new_m + old_m),) + rest] = old[:old_m], old[old_m:]
        else:
            wide[tuple(slice(0, n) for n in old.shape)] = old
        dim = reads.get(key.rsplit(".", 1)[0])
        if key.endswith(".weight") and dim is not None:
            index = [slice(None)] * wide.dim()
            index[dim] = slice(old.shape[dim], None)
            wide[tuple(index)] = 0
        out[key] = wide
    out.update({k: v for k, v in state.items() if k not in fresh})  # load_state_dict names what is unexpected
    # The new channels start nearly silent: small analysis weights, and a hyper-synthesis that predicts them
    # as zero-mean with the smallest scale, so they cost next to no bits until training gives them a use.
    for key in ("g_a.6.weight", "g_a.6.bias"):
        out[key][old_m:] *= 0.02
    for key in ("h_s.4.weight", "h_s.4.bias"):
        out[key][old_m:new_m] = 0
        out[key][new_m + old_m:] = 0
    return out


def state_fingerprint(net: torch.nn.Module) -> str:
    """SHA-256 (hex) of every parameter and buffer, CDF tables included: which exact weights code a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ImageCodec:
    """A CompressAI model ready to code: weights loaded, CDF tables built, on the CPU in eval mode.

    Entropy coding runs on the CPU so that the encoder's and decoder's tables
    and latents match bit for bit (CompressAI #279, #309: cross-device desync).
    """

    def __init__(self, net: torch.nn.Module, architecture: str, quality: int):
        self.net = net.eval().cpu()
        self.architecture = architecture
        self.quality = quality
        self.net.update()  # no-op when the checkpoint already carries its CDF tables
        self.fingerprint = state_fingerprint(self.net)
        self._coder = None

    @property
    def coder(self) -> LatentCoder:
        """The one-stream latent coder (raises ``UnsupportedModel`` for autoregressive models)."""
        if self._coder is None:
            self._coder = LatentCoder(self.net)
        return self._coder

    @classmethod
    def from_config(cls, cfg: ImageCodecConfig, quality: int | None = None) -> "ImageCodec":
        """Build and load the LIC of ``cfg`` at ``quality`` (default: ``cfg.quality``)."""
        quality = cfg.quality if quality is None else quality
        if quality not in cfg.qualities:
            raise ConfigError(f"quality {quality} not offered; valid: {', '.join(map(str, cfg.qualities))}")
        use_zoo = cfg.pretrained and not cfg.weights
        N, M = cfg.size(quality)
        net = build_model(cfg.architecture, quality, pretrained=use_zoo, metric=cfg.metric, N=N, M=M)
        if cfg.weights:
            load_weights(net, resolve_path(cfg.weights.format(quality=quality)))
        return cls(net, cfg.architecture, quality)

    @property
    def latent_names(self) -> list[str]:
        """Names of the coded latents in string order: ``['y', 'z']`` for hyperprior models, ``['y']`` for factorized."""
        return ["y", "z"] if hasattr(self.net, "h_a") else ["y"]

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        if x.dim() != 4 or x.shape[:2] != (1, 3):
            raise ValueError(f"expected one RGB image of shape (1, 3, H, W), got {tuple(x.shape)}")
        pad, unpad = compute_padding(x.shape[2], x.shape[3], min_div=PAD_MULTIPLE)
        return F.pad(x, pad, mode="replicate"), unpad

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        """The ``shape`` CompressAI's ``decompress`` wants, derived from the image size (not stored in files)."""
        stride = PAD_MULTIPLE if len(self.latent_names) == 2 else PAD_MULTIPLE // 4
        return -(-height // PAD_MULTIPLE) * PAD_MULTIPLE // stride, -(-width // PAD_MULTIPLE) * PAD_MULTIPLE // stride

    @torch.no_grad()
    def estimate_bits(self, x: torch.Tensor) -> list[float]:
        """Per latent, −log2 of the model's likelihoods for ``x`` (the rate training sees, no coder overhead)."""
        padded, _ = self._pad(x)
        likelihoods = self.net(padded)["likelihoods"]
        return [float(-torch.log2(likelihoods[name]).sum()) for name in self.latent_names]

    @torch.no_grad()
    def compress(self, x: torch.Tensor) -> LicPayload:
        """Entropy-code one image ``x`` of shape (1, 3, H, W) in [0, 1]."""
        padded, _ = self._pad(x)
        with one_thread():  # the hyperprior's scales pick the CDF tables: the decoder must compute them identically
            out = self.net.compress(padded)
        strings = [s[0] for s in out["strings"]]
        if tuple(out["shape"]) != self.latent_shape(x.shape[2], x.shape[3]):
            raise RuntimeError(f"{self.architecture}: latent shape {tuple(out['shape'])} is not the derived one")
        return LicPayload(strings, self.latent_names, x.shape[2], x.shape[3], self.estimate_bits(x))

    @torch.no_grad()
    def decompress(self, strings: list[bytes], height: int, width: int) -> torch.Tensor:
        """Decode ``strings`` into the (1, 3, height, width) reconstruction in [0, 1]."""
        if len(strings) != len(self.latent_names):
            raise ValueError(f"{self.architecture} codes {len(self.latent_names)} strings, got {len(strings)}")
        shape = self.latent_shape(height, width)
        with one_thread():
            x_hat = self.net.decompress([[s] for s in strings], shape)["x_hat"]
        _, unpad = compute_padding(height, width, min_div=PAD_MULTIPLE)
        return F.pad(x_hat, unpad).clamp_(0, 1)

    def encode_to(self, stream: StreamEncoder, x: torch.Tensor) -> torch.Tensor:
        """Code one image ``x`` (1, 3, H, W) in [0, 1] into ``stream``; returns the decoder's reconstruction."""
        padded, unpad = self._pad(x)
        return F.pad(self.coder.encode(stream, padded), unpad)

    def decode_from(self, stream: StreamDecoder, height: int, width: int) -> torch.Tensor:
        """The (1, 3, height, width) reconstruction coded in ``stream`` (see ``LatentCoder.decode`` for the bounds)."""
        coder = self.coder  # refuse an unsupported model before any size arithmetic
        pad, unpad = compute_padding(height, width, min_div=PAD_MULTIPLE)
        x_hat = coder.decode(stream, height + pad[2] + pad[3], width + pad[0] + pad[1])
        return F.pad(x_hat, unpad).nan_to_num_(0.0)  # a hostile stream's absurd latents give garbage, not NaN pixels
