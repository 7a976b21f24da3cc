"""Diffusion restoration guided by the caption, and DiffBIR's wavelet colour fix.

The decoder's last stage (docs/design.md §1.4): the LIC reconstruction plus the decoded
caption go in, a restored image comes out::

    restorer = Restorer(load_config("tiny").restorer)
    image = restorer.restore(reconstruction, caption, steps=4, guidance=2.0, seed=0, colour_fix=True)

Three kinds, all diffusers pipelines loaded with ``from_pretrained(id_or_dir)``:

- ``tiny``: :class:`TinyRestorerPipeline`, trained here (``itc tiny-zoo --only restorer``).
  It works on the 16×16×48 space-to-depth view of a 64×64 image and predicts x0 of
  the scaled residual (original − reconstruction), with a ``UNet2DConditionModel``
  that sees the reconstruction as extra input channels and cross-attends to the
  tiny CLIP text tower's hidden states of the caption. Classifier-free guidance
  (the empty caption is the unconditional branch) is applied in x0 space; sampling
  is DDIM with trailing timesteps, so 4 steps start at t = 999.
- ``sd-controlnet-img2img`` (``paper``): Stable Diffusion 1.5 + tile ControlNet
  img2img, the reconstruction both the init and the control image, the caption
  the prompt: the diffusers-native stand-in for DiffBIR.
- ``sd-img2img`` (``laptop``): SD-Turbo img2img, 1-4 steps.

Determinism: the noise comes from a CPU ``torch.Generator`` seeded per image, so a
seed gives the same output bytes in a fresh process on the same machine and thread
count. A preset whose ``restorer.kind`` is null returns the reconstruction.

The colour fix (DiffBIR ``wavelet_reconstruction``, from StableSR) keeps the
reconstruction's low-frequency band (5-level à-trous, scale ≈ 32 px) and the
restored image's high-frequency bands: generated texture, the reference's colours.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from PIL import Image

from .config import RESTORER_KINDS as KINDS
from .config import RestorerConfig, resolve_model
from .data import image_to_tensor, tensor_to_image
from .errors import ConfigError, WeightsError

__all__ = ["Restorer", "TinyRestorerPipeline", "wavelet_colour_fix", "encode_captions", "coordinates", "KINDS"]


def _wavelet_bands(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) bands of ``x`` (N, C, H, W): à-trous decomposition with a dilated 3×3 binomial kernel."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3).contiguous()
    high = torch.zeros_like(x)
    for level in range(levels):
        d = 2 ** level
        blurred = F.conv2d(F.pad(x, (d, d, d, d), mode="replicate"), kernel, dilation=d, groups=x.shape[1])
        high = high + (x - blurred)
        x = blurred
    return high, x


def wavelet_colour_fix(restored: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """High-frequency bands of ``restored`` plus the low band of ``reference`` (both (N, 3, H, W) in [0, 1])."""
    return (_wavelet_bands(restored)[0] + _wavelet_bands(reference)[1]).clamp(0, 1)


def encode_captions(tokenizer, text_encoder, captions: list[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden states (N, max_tokens, D), mask (N, max_tokens)) of the frozen text tower for ``captions``.

    Each caption is its tokens (cut at ``max_tokens - 1``) plus EOS, padded; the
    empty caption is just EOS, the unconditional branch of guidance.
    """
    device = next(text_encoder.parameters()).device
    ids = torch.full((len(captions), max_tokens), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(captions), max_tokens), dtype=torch.long)
    for i, text in enumerate(captions):
        row = tokenizer(text, add_special_tokens=False).input_ids[: max_tokens - 1] + [tokenizer.eos_token_id]
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    ids, mask = ids.to(device), mask.to(device)
    with torch.no_grad():
        hidden = text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    return hidden, mask


def coordinates(n: int, h: int, w: int, device=None) -> torch.Tensor:
    """(n, 2, h, w) channels of y and x in [−1, 1]: where each grid cell is (captions name positions)."""
    ys = torch.linspace(-1, 1, h, device=device)[:, None].expand(h, w)
    xs = torch.linspace(-1, 1, w, device=device)[None, :].expand(h, w)
    return torch.stack([ys, xs])[None].expand(n, 2, h, w)


class TinyRestorerPipeline(DiffusionPipeline):
    """The tiny world's restorer: reconstruction + caption → restored image (see the module docstring).

    Components: ``unet`` (``UNet2DConditionModel``, input = noisy residual, reconstruction, coordinates),
    ``scheduler`` (DDIM, ``prediction_type="sample"``), ``text_encoder`` (the tiny CLIP text tower, frozen)
    and ``tokenizer``.
    """

    model_cpu_offload_seq = "text_encoder->unet"

    def __init__(self, unet, scheduler, text_encoder, tokenizer, patch: int = 4, residual_scale: float = 5.0,
                 max_text_tokens: int = 48):
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler, text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(patch=patch, residual_scale=residual_scale, max_text_tokens=max_text_tokens)

    def denoiser_input(self, noisy: torch.Tensor, recon_s2d: torch.Tensor) -> torch.Tensor:
        """UNet input: the noisy target, the reconstruction in [−1, 1] (space-to-depth) and coordinates."""
        n, _, h, w = noisy.shape
        return torch.cat([noisy, recon_s2d * 2 - 1, coordinates(n, h, w, noisy.device)], dim=1)

    @torch.no_grad()
    def __call__(self, prompt: list[str], image: torch.Tensor, num_inference_steps: int = 4,
                 guidance_scale: float = 1.0, generator: list[torch.Generator] | torch.Generator | None = None
                 ) -> torch.Tensor:
        """Restore ``image`` ((N, 3, H, W) in [0, 1]) guided by ``prompt`` (N captions); returns (N, 3, H, W) in [0, 1].

        ``guidance_scale`` 1 uses the caption alone, 0 the empty caption alone, above 1 extrapolates away from it.
        """
        p = self.config.patch
        n, _, height, width = image.shape
        if len(prompt) != n:
            raise ValueError(f"{len(prompt)} captions for {n} images")
        device = self.unet.device
        multiple = 4 * p  # the UNet halves the p-times smaller grid twice
        pad_h, pad_w = -height % multiple, -width % multiple
        x = F.pad(image.to(device, torch.float32), (0, pad_w, 0, pad_h), mode="replicate")
        recon = F.pixel_unshuffle(x, p)
        use_cfg = guidance_scale != 1.0
        cond, cond_mask = encode_captions(self.tokenizer, self.text_encoder, list(prompt), self.config.max_text_tokens)
        if use_cfg:
            uncond, uncond_mask = encode_captions(self.tokenizer, self.text_encoder, [""] * n, self.config.max_text_tokens)
            cond, cond_mask = torch.cat([uncond, cond]), torch.cat([uncond_mask, cond_mask])
        from diffusers.utils.torch_utils import randn_tensor
        latents = randn_tensor(recon.shape, generator=generator, device=torch.device("cpu")).to(device)
        latents = latents * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            inp = self.denoiser_input(latents, recon)
            if use_cfg:
                inp = torch.cat([inp, inp])
            x0 = self.unet(inp, t, encoder_hidden_states=cond, encoder_attention_mask=cond_mask).sample
            if use_cfg:
                x0_uncond, x0_cond = x0.chunk(2)
                x0 = x0_uncond + guidance_scale * (x0_cond - x0_uncond)
            latents = self.scheduler.step(x0, t, latents).prev_sample
        out = F.pixel_shuffle(recon + latents / self.config.residual_scale, p)
        return out[:, :, :height, :width].clamp(0, 1).cpu()


def _load_hub(cfg: RestorerConfig):
    """The diffusers pipeline of a hub restorer kind (SD + ControlNet img2img, or plain img2img)."""
    import diffusers

    if cfg.kind == "sd-controlnet-img2img":
        if not cfg.controlnet:
            raise ConfigError("restorer.kind sd-controlnet-img2img needs restorer.controlnet")
        controlnet = diffusers.ControlNetModel.from_pretrained(resolve_model(cfg.controlnet))
        pipe = diffusers.StableDiffusionControlNetImg2ImgPipeline.from_pretrained(
            resolve_model(cfg.model), controlnet=controlnet, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)
    else:
        pipe = diffusers.AutoPipelineForImage2Image.from_pretrained(resolve_model(cfg.model))
    if cfg.scheduler:
        scheduler_class = getattr(diffusers, cfg.scheduler, None)
        if scheduler_class is None or not hasattr(scheduler_class, "from_config"):
            raise ConfigError(f"restorer.scheduler {cfg.scheduler!r} is not a diffusers scheduler class")
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    return pipe


class Restorer:
    """A preset's restorer, loaded on first use; ``restore`` and ``restore_batch`` run it."""

    def __init__(self, config: RestorerConfig, device: str = "cpu"):
        if config.kind is not None and config.kind not in KINDS:
            raise ConfigError(f"unknown restorer.kind {config.kind!r}; valid: {', '.join(KINDS)} or null")
        self.config = config
        self.device = device
        self._pipe = None

    @property
    def enabled(self) -> bool:
        """False for a preset without a restorer (``restore`` then returns the reconstruction)."""
        return self.config.kind is not None

    @property
    def pipeline(self):
        """The diffusers pipeline, loaded on first use (a missing model raises WeightsError)."""
        if self._pipe is None:
            try:
                if self.config.kind == "tiny":
                    self._pipe = TinyRestorerPipeline.from_pretrained(resolve_model(self.config.model),
                                                                      dtype=torch.float32)
                else:
                    self._pipe = _load_hub(self.config)
            except (OSError, ValueError) as err:
                if isinstance(err, ConfigError):
                    raise
                raise WeightsError(f"restorer {self.config.model!r} could not be loaded ({type(err).__name__}: "
                                   f"{str(err).splitlines()[0] if str(err) else ''}); the tiny preset's comes "
                                   "with the repository (`itc tiny-zoo --only restorer` retrains it), hub models "
                                   "need the internet once") from None
            self._pipe.to(self.device)
        return self._pipe

    def restore(self, reconstruction: Image.Image, caption: str | None, *, steps: int | None = None,
                guidance: float | None = None, seed: int | None = None, colour_fix: bool | None = None,
                quality: int | None = None) -> Image.Image:
        """The restored image of ``reconstruction`` guided by ``caption`` (None or "" = no caption).

        Unset arguments come from the preset's ``restorer`` section; ``quality``, the rate point the
        reconstruction was coded at, picks the guidance where the preset sets one per point. The result has
        the input's size.
        """
        return self.restore_batch([reconstruction], [caption], steps=steps, guidance=guidance, seed=seed,
                                  colour_fix=colour_fix, qualities=None if quality is None else [quality])[0]

    def restore_batch(self, reconstructions: list[Image.Image], captions: list[str | None], *,
                      steps: int | None = None, guidance: float | None = None, seed: int | None = None,
                      colour_fix: bool | None = None, qualities: list[int | None] | None = None) -> list[Image.Image]:
        """:meth:`restore` for many images at once (every image gets the noise of ``seed``, as it would alone);
        ``qualities``: each image's rate point (for the guidance, when ``guidance`` is unset)."""
        if not self.enabled:
            return list(reconstructions)
        cfg = self.config
        steps = cfg.steps if steps is None else steps
        qualities = [None] * len(reconstructions) if qualities is None else list(qualities)
        if len(qualities) != len(reconstructions):
            raise ValueError(f"{len(reconstructions)} reconstructions but {len(qualities)} qualities")
        scales = [cfg.guidance_at(q) if guidance is None else guidance for q in qualities]
        seed = cfg.seed if seed is None else seed
        colour_fix = cfg.colour_fix if colour_fix is None else colour_fix
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {steps!r}")
        if not all(g >= 0 for g in scales):
            raise ConfigError(f"guidance must be a number >= 0, got {next(g for g in scales if not g >= 0)!r}")
        captions = [c or "" for c in captions]
        x = torch.cat([image_to_tensor(r) for r in reconstructions])
        out = torch.empty_like(x)
        for scale in dict.fromkeys(scales):  # one pipeline call per guidance; each image's noise is its own
            idx = [i for i, g in enumerate(scales) if g == scale]
            generators = [torch.Generator("cpu").manual_seed(seed) for _ in idx]
            if cfg.kind == "tiny":
                out[idx] = self.pipeline([captions[i] for i in idx], x[idx], num_inference_steps=steps,
                                         guidance_scale=scale, generator=generators)
            else:
                out[idx] = self._hub_call(x[idx], [captions[i] for i in idx], steps, scale, generators)
        if colour_fix:
            out = wavelet_colour_fix(out, x)
        return [tensor_to_image(o) for o in out]

    def _hub_call(self, x: torch.Tensor, captions: list[str], steps: int, guidance: float, generators) -> torch.Tensor:
        """Run an SD img2img pipeline on ``x`` padded to a multiple of 64, cropped back."""
        height, width = x.shape[-2:]
        padded = F.pad(x, (0, -width % 64, 0, -height % 64), mode="replicate")
        kwargs = dict(prompt=captions, image=padded, strength=self.config.strength, num_inference_steps=steps,
                      guidance_scale=guidance, generator=generators, output_type="pt")
        if self.config.negative_prompt and guidance > 1:
            kwargs["negative_prompt"] = [self.config.negative_prompt] * len(captions)
        if self.config.kind == "sd-controlnet-img2img":
            kwargs.update(control_image=padded, controlnet_conditioning_scale=self.config.controlnet_scale)
        out = self.pipeline(**kwargs).images
        return out[:, :, :height, :width].float().cpu().clamp(0, 1)
