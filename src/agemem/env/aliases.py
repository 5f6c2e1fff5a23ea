"""Short memory ids for small models: the store's ids shown as `mem_<n>`, at any store size.

A tiny word-level model can copy an id only if the id is one of a few tokens it has seen often:
a small id space is what let it learn to copy ids into Update/Delete, while 8-hex-digit store
ids (a new token each) could never be copied. Each entry's alias is `mem_<n>` with `n` drawn at
random among the unused numbers of the current space (so recency cannot be read off an id). The
first space is `1..space` (`EnvConfig.id_space`, 9 by default); when it is full it grows to all
numbers with one more digit (9 -> 99 -> 999 ...), so ids stay as short as the store size allows.
An alias is never reused within an episode (a deleted entry's alias stays retired) and maps to
exactly one store id; no store id is ever shown in its 8-hex form. Everything the model reads
goes through `show` / `shown_text`, everything it writes through `real`; the store keeps its own
ids.

>>> import random
>>> aliases = IdAliases(3, random.Random(0))
>>> shown = aliases.show("mem_0badcafe")
>>> shown in alias_vocabulary(3), aliases.real(shown), aliases.show("mem_0badcafe") == shown
(True, 'mem_0badcafe', True)
>>> aliases.shown_text("Added mem_0badcafe: tea") == f"Added {shown}: tea"
True
>>> aliases.real("mem_7"), aliases.real("mem_deadbeef")  # unknown ids pass through
('mem_7', 'mem_deadbeef')

The space grows once full: 3 entries fill `mem_1..mem_3`, the next ones come from `mem_4..mem_99`.

>>> first = [aliases.show(f"mem_0000000{i}") for i in range(2)]
>>> sorted([shown, *first]) == alias_vocabulary(3)
True
>>> aliases.space, aliases.show("mem_0000000a") in alias_vocabulary(3, spaces=2)[3:], aliases.space
(3, True, 99)
>>> next_space(9), next_space(99), next_space(3), next_space(10)
(99, 999, 99, 999)
>>> len(alias_vocabulary(9, spaces=2)), alias_vocabulary(9, spaces=2)[-1]
(99, 'mem_99')
"""

from __future__ import annotations

import random
import re

DEFAULT_ID_SPACE = 9  # the first space of every env preset (one-digit ids for up to 9 entries)
_STORE_ID = re.compile(r"\bmem_[0-9a-f]{8}\b")


def next_space(space: int) -> int:
    """The space after `space`: every number with one more digit than `space`'s largest."""
    return 10 ** (len(str(space)) + 1) - 1


def alias_vocabulary(space: int, spaces: int = 1) -> list[str]:
    """Every alias the first `spaces` spaces of an episode starting at `space` can show, in order
    (for building a tokenizer's vocabulary): `alias_vocabulary(9, 2)` is `mem_1` .. `mem_99`."""
    if space < 1 or spaces < 1:
        raise ValueError(f"need space >= 1 and spaces >= 1, got {space} and {spaces}")
    last = space
    for _ in range(spaces - 1):
        last = next_space(last)
    return [f"mem_{i}" for i in range(1, last + 1)]


class IdAliases:
    """The aliases of one episode: `space` is the size of the first space (>= 1)."""

    def __init__(self, space: int, rng: random.Random) -> None:
        if space < 1:
            raise ValueError(f"the id space must be >= 1, got {space}")
        self._rng = rng
        self.space = space  # the largest number of the current space
        self._free = list(range(1, space + 1))  # its unused numbers
        self._shown: dict[str, str] = {}  # real -> alias
        self._real: dict[str, str] = {}  # alias -> real

    def show(self, real_id: str) -> str:
        """The alias of `real_id`, drawing a new one on first sight (growing the space when it is
        full)."""
        if real_id not in self._shown:
            if not self._free:
                grown = next_space(self.space)
                self._free = list(range(self.space + 1, grown + 1))
                self.space = grown
            i = self._rng.randrange(len(self._free))
            self._free[i], self._free[-1] = self._free[-1], self._free[i]
            alias = f"mem_{self._free.pop()}"
            self._shown[real_id], self._real[alias] = alias, real_id
        return self._shown[real_id]

    def real(self, shown_id: str) -> str:
        """The store id behind an id the model wrote (unknown ids pass through unchanged, so the
        store reports them as not found)."""
        return self._real.get(shown_id, shown_id)

    def shown_text(self, text: str) -> str:
        """`text` with every store id replaced by its alias."""
        return _STORE_ID.sub(lambda m: self.show(m.group()), text)
