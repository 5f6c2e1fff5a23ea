"""Short memory ids for small models: the store's ids shown as `mem_1` .. `mem_N`.

A tiny word-level model can copy an id only if the id is one of a few tokens it has seen often
(docs/LEARNABILITY.md: with a large id space Update never worked). The aliases are drawn at random
from the space, so recency cannot be read off an id. Everything the model reads goes through
`show` / `shown_text`, everything it writes through `real`; the store keeps its own ids.

>>> import random
>>> aliases = IdAliases(3, random.Random(0))
>>> shown = aliases.show("mem_0badcafe")
>>> shown in alias_vocabulary(3), aliases.real(shown)
(True, 'mem_0badcafe')
>>> aliases.shown_text("Added mem_0badcafe: tea") == f"Added {shown}: tea"
True
"""

from __future__ import annotations

import random
import re

_STORE_ID = re.compile(r"\bmem_[0-9a-f]{8}\b")


def alias_vocabulary(space: int) -> list[str]:
    """Every alias a space of `space` ids can show (for building a tokenizer's vocabulary)."""
    return [f"mem_{i}" for i in range(1, space + 1)]


class IdAliases:
    """Aliases for one episode; `space=None` shows the real ids unchanged."""

    def __init__(self, space: int | None, rng: random.Random) -> None:
        self._free = alias_vocabulary(space or 0)
        rng.shuffle(self._free)
        self._shown: dict[str, str] = {}  # real -> alias
        self._real: dict[str, str] = {}  # alias -> real

    def show(self, real_id: str) -> str:
        """The alias of `real_id`, drawing a new one on first sight (the real id once the space
        is used up)."""
        if real_id not in self._shown:
            alias = self._free.pop() if self._free else real_id
            self._shown[real_id], self._real[alias] = alias, real_id
        return self._shown[real_id]

    def real(self, shown_id: str) -> str:
        """The store id behind an id the model wrote (unknown ids pass through unchanged, so the
        store reports them as not found)."""
        return self._real.get(shown_id, shown_id)

    def shown_text(self, text: str) -> str:
        """`text` with every store id replaced by its alias."""
        return _STORE_ID.sub(lambda m: self.show(m.group()), text)
