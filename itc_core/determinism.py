"""Bit-identical computation on both ends of the codec.

Entropy decoders (CompressAI's rANS for the image, the range coder for the
caption) desynchronise if the decoder's model outputs differ from the
encoder's by a single ULP, and torch's CPU reductions change with the thread
count. Everything that feeds an entropy coder therefore runs on one thread.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

__all__ = ["one_thread"]


@contextmanager
def one_thread():
    """Pin torch to one CPU thread inside the block (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
