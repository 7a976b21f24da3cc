"""itc: LMM-driven semantic image-text coding (Murai, Sun & Katto, VCIP 2024), Jupyter-first.

Start with :class:`itc_core.ImageTextCodec` (``from_preset("tiny")``, ``encode``, ``decode``; defined in
``itc_core.codec``); the ``itc`` command wraps it. Modules: ``config`` (presets), ``image_codec`` (CompressAI LIC),
``captioner`` (LMM captions, CSV captions), ``caption_codec`` (lossless caption coding),
``bitstream`` (the ``.itc`` file), ``data`` (image reading), ``metrics``, ``evaluate`` (dataset runs),
``tinyworld`` (scenes, the referee, recipes), ``viz`` and ``widgets`` (notebooks), ``cli``.

Importing the package loads no stage (no torch, no CompressAI): import the module you
use. The ``itc`` command's start-up relies on it (``tests/test_cli_batch.py`` checks).
"""

__version__ = "0.1.0"

__all__ = ["ImageTextCodec", "__version__"]


def __getattr__(name: str):
    """``from itc_core import ImageTextCodec``, imported on first use so that ``import itc_core`` stays light."""
    if name == "ImageTextCodec":
        from .codec import ImageTextCodec

        return ImageTextCodec
    raise AttributeError(f"module 'itc_core' has no attribute {name!r}")
