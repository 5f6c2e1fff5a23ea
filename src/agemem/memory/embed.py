"""Text embedders. Placeholder: the interface only; implementations land with the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of shape (n, dim), so dot product = cosine."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...
