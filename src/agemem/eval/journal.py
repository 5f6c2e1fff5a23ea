"""`TurnJournal`: every model call of the running batch, on disk, so that a killed run resumes
inside a batch of tasks and not only between batches.

Results are saved per batch, and one LoCoMo conversation is one task of over a thousand model
calls (hours on CPU): without a journal a killed run would start that conversation over. Each
`act` call appends one line: a hash of what the model was given (contexts and tools), the turns
it gave, and the call's wall time. A resumed run replays the batch from its start. An episode is
a function of its task, its seed and the turns it is given (store ids come from
`seeded_memory_ids`), so the same calls come in the same order, and each is answered from the
journal while its hash matches. At the first call that does not match (say, code that changed
between the runs) the journal is cut there and the model takes over.

Replayed calls return at once; the wall time they took when they ran is kept in
`replayed_seconds` for the runner to charge to the batch. Lines are flushed per call: a killed
process loses nothing, and a line cut short by the kill is dropped and asked again.

>>> import tempfile
>>> from pathlib import Path
>>> from agemem.policy.base import Turn
>>> class Upper:
...     calls = 0
...     def act(self, contexts, tools=None):
...         self.calls += len(contexts)
...         return [Turn(text=c[-1]["content"].upper()) for c in contexts]
>>> path = Path(tempfile.mkdtemp()) / "journal.jsonl"
>>> model = Upper()
>>> first = TurnJournal(model, path)
>>> first.begin("batch 0")
>>> first.act([[{"role": "user", "content": "hi"}]])[0].text
'HI'
>>> again = TurnJournal(model, path)  # a resumed run: the same call is answered from the file
>>> again.begin("batch 0")
>>> again.act([[{"role": "user", "content": "hi"}]])[0].text, model.calls, again.replayed
('HI', 1, 1)
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import deque
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from agemem.policy.base import Message, Policy, ToolSpec, Turn


class TurnJournal:
    """A `Policy` that answers from `path` what it has answered before in this batch."""

    def __init__(self, policy: Policy, path: Path) -> None:
        self.policy = policy
        self.path = path
        self.replayed = 0  # contexts answered from the journal in this batch
        self.replayed_seconds = 0.0  # the wall time those calls took when they ran
        self._pending: deque[tuple[int, dict[str, Any]]] = deque()  # (line start offset, entry)
        self._file: IO[bytes] | None = None

    def begin(self, batch: str) -> None:
        """Journal `batch` (a key naming its tasks): replay what the file holds for it, or
        start the file afresh when it holds another batch (or nothing)."""
        self.close()
        self.replayed, self.replayed_seconds = 0, 0.0
        header = json.dumps({"batch": batch}) + "\n"
        entries = self._read(header)
        if entries is None:
            self.path.write_text(header, encoding="utf-8")
            entries = []
        self._pending = deque(entries)
        self._file = self.path.open("ab")

    def act(self, contexts: list[list[Message]], tools: list[ToolSpec] | None = None) -> list[Turn]:
        key = _key(contexts, tools)
        if self._pending:
            start, entry = self._pending.popleft()
            if entry["key"] == key and len(entry["turns"]) == len(contexts):
                self.replayed += len(contexts)
                self.replayed_seconds += entry["seconds"]
                return [Turn(**turn) for turn in entry["turns"]]
            self._cut(start)
        began = time.perf_counter()
        turns = self.policy.act(contexts, tools)
        entry = {"key": key, "seconds": time.perf_counter() - began}
        entry["turns"] = [asdict(turn) for turn in turns]
        if self._file is not None:
            self._file.write(json.dumps(entry, ensure_ascii=False).encode("utf-8") + b"\n")
            self._file.flush()
        return turns

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> None:
        """The run's batches are all saved: the journal is no longer needed."""
        self.close()
        self._pending.clear()
        self.path.unlink(missing_ok=True)

    def _read(self, header: str) -> list[tuple[int, dict[str, Any]]] | None:
        """The file's entries with the byte offset each starts at, if it journals this batch."""
        if not self.path.is_file():
            return None
        data = self.path.read_bytes()
        if not data.startswith(header.encode("utf-8")):
            return None
        entries, offset = [], len(header.encode("utf-8"))
        for raw in data[offset:].split(b"\n")[:-1]:  # the last piece: "" or a line cut short
            try:
                entries.append((offset, json.loads(raw)))
            except ValueError:
                break
            offset += len(raw) + 1
        if offset < len(data):
            with self.path.open("r+b") as f:
                f.truncate(offset)
        return entries

    def _cut(self, offset: int) -> None:
        """Drop the journal from `offset` on: the run has gone another way from there."""
        self._pending.clear()
        if self._file is not None:
            self._file.flush()
            self._file.truncate(offset)  # append mode: later writes go to the new end


def _key(contexts: list[list[Message]], tools: list[ToolSpec] | None) -> str:
    text = json.dumps([contexts, tools], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
