"""Short memory ids at any store size: `IdAliases` on its own, then held-out episodes with more
entries than the first id space, on the real SQLite store, the real embedder and real tools."""

from __future__ import annotations

import random
import re

import pytest

from agemem.env import PRESETS, EnvConfig, EnvConfigError, IdAliases, MemoryEnv, alias_vocabulary
from agemem.env.aliases import next_space
from agemem.env.embed_cache import cached
from agemem.policy.scripted import call, emit
from agemem.tasks.synthetic import SyntheticConfig, generate_tasks

SHORT = re.compile(r"^mem_[1-9][0-9]*$")
ANY_ID = re.compile(r"\bmem_\w+")


def store_id(i: int) -> str:
    return f"mem_{i:08x}"


# ---- IdAliases -------------------------------------------------------------------------------


def test_the_space_grows_9_99_999_and_stays_as_short_as_the_store_allows():
    aliases = IdAliases(9, random.Random(0))
    first = [aliases.show(store_id(i)) for i in range(9)]
    assert sorted(first, key=lambda a: int(a[4:])) == alias_vocabulary(9) and aliases.space == 9
    second = [aliases.show(store_id(i)) for i in range(9, 99)]
    assert set(second) == set(alias_vocabulary(9, spaces=2)[9:]) and aliases.space == 99
    third = aliases.show(store_id(99))
    assert 100 <= int(third[4:]) <= 999 and aliases.space == 999
    assert [next_space(s) for s in (9, 99, 999, 5, 10)] == [99, 999, 9999, 99, 999]


def test_every_alias_is_short_unique_and_maps_back_to_its_one_store_id():
    aliases = IdAliases(9, random.Random(3))
    reals = [store_id(i * 7919) for i in range(250)]
    shown = [aliases.show(r) for r in reals]
    assert all(SHORT.match(a) for a in shown)
    assert len(set(shown)) == len(shown)  # never reused, one alias per store id
    assert [aliases.real(a) for a in shown] == reals
    assert [aliases.show(r) for r in reals] == shown  # stable within the episode
    text = " ".join(f"[{r}] fact" for r in reals[:20])
    assert aliases.shown_text(text) == " ".join(f"[{a}] fact" for a in shown[:20])
    assert aliases.real("mem_1000") == "mem_1000"  # unknown: passes through to "not found"


def test_aliases_are_drawn_in_random_order():
    orders = [[IdAliases(9, random.Random(s)).show(store_id(0))] for s in range(30)]
    assert len({o[0] for o in orders}) > 3  # the first entry does not always get mem_1
    for seed in range(5):
        aliases = IdAliases(9, random.Random(seed))
        drawn = [int(aliases.show(store_id(i))[4:]) for i in range(30)]
        assert drawn[:9] != sorted(drawn[:9]) and drawn[9:] != sorted(drawn[9:])


def test_id_space_is_the_first_space_of_every_preset():
    assert {name: config.id_space for name, config in PRESETS.items()} == {
        "paper": 9,
        "synthetic": 9,
        "compact": 9,
        "atommem": 9,
    }
    for bad in (0, -1, None):
        with pytest.raises(EnvConfigError, match="id_space"):
            EnvConfig(id_space=bad)
    with pytest.raises(ValueError):
        IdAliases(0, random.Random(0))


# ---- episodes with more entries than the first space ------------------------------------------


def _drive_big_episode(config: EnvConfig, embedder):
    """A held-out synthetic task with 12 stage-1 facts: turns 1-11 add each message; turn 12
    deletes the 3rd entry, updates the 11th through its shown id, and adds the 12th message."""
    (task,) = generate_tasks(
        "test",
        limit=1,
        config=SyntheticConfig("big", n_entities=3, n_facts=12, n_corrections=0, n_chit_chat=0),
    )
    assert len(task.contextual) == 12
    env = MemoryEnv(config, embedder=cached(embedder), seed=5)
    seen: list[str] = []  # every text the model is shown
    added: list[str] = []  # each entry's shown id, in order
    contents: dict[str, str] = {}
    try:
        context = env.reset(task)
        n = 0
        while not env.done:
            # The system prompt is left out: its example id (`mem_a5b40d65` in the full prompt)
            # documents the id shape; it is no entry's id.
            seen += [m.get("content") or "" for m in context if m["role"] != "system"]
            stage = env.stage
            incoming = task.contextual[n].content if stage == 1 else ""
            if stage == 1 and n < 11:
                turn = emit("store", [call("Add_memory", content=incoming)])
            elif stage == 1:
                turn = emit(
                    "fix",
                    [
                        call("Delete_memory", memory_id=added[2], confirmation=True),
                        call("Update_memory", memory_id=added[10], content="kai plays golf ."),
                        call("Add_memory", content=incoming),
                    ],
                )
            elif stage == 2:
                turn = emit("skip", [])
            else:
                turn = emit("done", answer="golf")
            result = env.step(turn)
            observations = result.info["observations"]
            seen += observations
            for text in observations:
                if m := re.match(r"Added (\S+): (.*)$", text):
                    added.append(m.group(1))
                    contents[m.group(1)] = m.group(2)
            n += stage == 1
            context = result.context
        return env.episode().facts, seen, added, contents, task
    finally:
        env.close()


@pytest.mark.parametrize("preset", ["synthetic", "paper"])
def test_past_nine_entries_every_id_is_short_and_update_hits_the_11th_entry(preset, embedder):
    facts, seen, added, contents, task = _drive_big_episode(PRESETS[preset], embedder)
    assert len(added) == 12, seen  # every fact was stored (no near-duplicate merge)
    ids_seen = {i for text in seen for i in ANY_ID.findall(text)}
    assert ids_seen and all(SHORT.match(i) for i in ids_seen), sorted(ids_seen)
    assert set(added) <= ids_seen and len(set(added)) == 12  # no alias reused after the delete
    assert set(added[:9]) == set(alias_vocabulary(9))  # the first space, then the grown one
    assert all(10 <= int(a[4:]) <= 99 for a in added[9:])
    assert set(added) <= set(alias_vocabulary(9, spaces=2))  # all known to the tiny tokenizer
    eleventh = added[10]
    assert [(u.id, u.old_content, u.content) for u in facts.updates] == [
        (eleventh, task.contextual[10].content, "kai plays golf .")
    ]
    final = {m.id: m.content for m in facts.final_memories}
    expected = {a: contents[a] for a in added if a != added[2]}
    expected[eleventh] = "kai plays golf ."
    assert final == expected  # exactly the 11th changed, the 3rd is gone, the 12th is new
