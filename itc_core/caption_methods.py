"""The names and file codes of the caption coding methods, importable without torch.

``caption_codec`` implements them; the command line (``--method`` choices,
``itc inspect --sizes``) and the config loader only need the names, and must
not pay torch's import time for them.

``auto`` is a choice, not a method: per caption it codes with the cheapest of
the methods at hand (``caption_codec.choose_method``), and a file or a caption
file records that concrete method, so no decoder ever meets ``auto``.
"""

__all__ = ["METHODS", "METHOD_CODES", "LM_METHODS", "AUTO", "CHOICES"]

from .bitstream import TEXT_METHODS  # torch-free; the .itc header stores a method's position here

METHODS = TEXT_METHODS
METHOD_CODES = {name: code for code, name in enumerate(METHODS, start=1)}  # standalone caption files' first byte
LM_METHODS = ("rank-zlib", "lm-ac", "lmm-ac")
AUTO = "auto"
CHOICES = (AUTO,) + METHODS  # what a preset's caption.method, --caption-method and --method accept
