"""itc: LMM-driven semantic image-text coding (Murai, Sun & Katto, VCIP 2024), Jupyter-first.

Start with :class:`itc_core.codec.ImageTextCodec` (``from_preset("tiny")``, ``encode``, ``decode``);
the ``itc`` command wraps it. Modules: ``config`` (presets), ``image_codec`` (CompressAI LIC),
``captioner`` (LMM captions, CSV captions), ``caption_codec`` (lossless caption coding),
``bitstream`` (the ``.itc`` file), ``data`` (image reading), ``metrics``, ``evaluate`` (dataset runs),
``tinyworld`` (scenes, the referee, recipes), ``viz`` and ``widgets`` (notebooks), ``cli``.
"""

__version__ = "0.1.0"
