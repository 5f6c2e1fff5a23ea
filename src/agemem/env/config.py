"""`EnvConfig`: every knob of an episode, with named presets.

Values the papers give are cited; the others are our choices, each written down here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from agemem.context import DEFAULT_T_MAX, DEFAULT_THETA
from agemem.env.aliases import DEFAULT_ID_SPACE
from agemem.memory.store import SearchMode
from agemem.tasks.base import Task

LTM_TOOLS = ("Add_memory", "Update_memory", "Delete_memory")
STM_TOOLS = ("Summary_context", "Filter_context")
# AgeMem's stages: 1 builds memory (LTM tools; the system retrieves for the agent), 2 manages the
# context under distractors (STM tools), 3 retrieves, manages the context and answers.
PAPER_STAGE_TOOLS = (LTM_TOOLS, STM_TOOLS, ("Retrieve_memory", *STM_TOOLS))


class EnvConfigError(ValueError):
    """An invalid configuration; the message names the field and the fix."""


@dataclass(frozen=True)
class EnvConfig:
    """One episode's rules.

    AgeMem fields:
    - `t_max`: the context budget in tokens (AgeMem: 8,192). `None` takes the task's own budget,
      `task.metadata["t_max"]` (the synthetic curriculum sets one), plus `t_max_margin`.
    - `budget_excludes_system`: measure the budget on top of the system prompt (the fixed prompt
      is not the agent's to manage; the paper's 8,192 counts the whole window, so False there).
    - `budget_stages`: stages whose contexts are checked against the budget. Our default (2, 3):
      stage 1 offers no context tool and its context is discarded at stage 2, so an overflow there
      is the task's doing, not the agent's.
    - `n_max`: cap on model turns in the whole episode (AgeMem's N_max; the paper gives no value).
      `None`: no overall cap; stages 1-2 take one turn per message and `stage3_max_turns` bounds
      the rest. At the cap the episode ends; unanswered questions stay unanswered.
    - `stage3_max_turns`: cap on turns per question in stage 3 (ours: 8); at the cap the question
      is left unanswered and the next question (or the end) comes.
    - `carry_questions`: with several questions (LoCoMo, hotpotqa-long), whether each question's
      turns stay in the context for the next one (True) or every question starts from the
      context stage 3 began with (False, ours: the questions are independent, and carried
      along, SmolLM2's unanswered turns on LoCoMo passed 8,800 prompt tokens, beyond its
      8,192-token window, by the ~40th of 152 questions). The store keeps what any question's
      turns wrote.
    - `auto_retrieve_k`: memories shown with each stage-1 message (ours: 3, Retrieve_memory's
      default top_k).
    - `keep_stage12_turns`: keep the agent's stage-1/2 outputs and their observations in the
      context (ours: True). False keeps only the incoming messages there: the agent sees its store
      through the auto-retrieved memories, and in stage 2 its own tool calls cost no context.
    - `stage1_window`: when the stage-1 context holds this many messages (system prompt aside),
      it is cleared before the next one (None: never, AgeMem's whole conversation). 1 shows only
      the current message with its auto-retrieved memories: with `keep_stage12_turns=False` the
      earlier messages add nothing the memories do not show, and they would be most of every
      stage-1 prompt's tokens. Long conversations (LoCoMo) need a window to fit a model's context.
    - `stage2_reset`: stage 2 starts from an empty context (AgeMem: the conversation
      restarts; the system prompt and the store are kept). False keeps the stage-1 messages
      in the context, for a baseline whose only memory is the conversation (with
      `stage1_window=None`, the whole conversation).
    - `over_budget`: what happens to a context over the budget before the model sees it.
      "record" (AgeMem): it is given whole and recorded as an overflow, which the reward
      penalises and `success` counts a failure. "drop_oldest" (ours, for baselines that never
      manage their context): the oldest non-protected messages are dropped until it fits
      (`Context.drop_oldest`, the latest message always kept), the sliding window of a chat
      model without memory; what is dropped is lost to the episode.
    - `id_space`: the size of the first id space (ours: 9, every preset). The model never sees the
      store's 8-hex-digit ids: each entry is shown as `mem_<n>`, n drawn at random among the
      unused numbers of the space (`agemem.env.aliases`); a full space grows to all numbers with
      one more digit (9 -> 99 -> 999), and an alias is never reused within an episode. A small id
      space is what let a tiny word-level model learn to copy ids into Update/Delete: each id is
      one frequent token (the tiny tokenizer knows the first two spaces, `mem_1` .. `mem_99`).
      `AtomMemEnv` shows memories by position (`Memory i`), never by id.
    - `stage_tools`: the tools each stage offers (the paper's split by default); a call to another
      tool is refused with an observation naming the tools allowed now.
    - `native_tools`: tools go to the model as OpenAI function schemas (`Policy.act(tools=...)`)
      instead of AgeMem's `<tool_call>` tags described in the system prompt.
    - `system_prompt`: "full" (protocol, tool docs, stage guide) or "compact" (tags and tool
      signatures in a few dozen tokens, for small models that learn the protocol by SFT).

    AtomMem fields: `chunk_tokens` / `chunk_overlap` (AtomMem: 4,096 / 100), `atommem_top_k`
    (AtomMem: 6), `max_chunk_steps` (AtomMem: 40; chunks beyond it are not read).
    Shared: `filter_theta` (AgeMem: 0.6), `search_mode` (dense: both papers retrieve by cosine),
    `dedupe_threshold` (the cosine at which the env's store refuses a near-duplicate add, dedupe
    mode "reject"; None keeps the store's default 0.95).
    """

    name: str = "custom"
    method: Literal["agemem", "atommem"] = "agemem"
    t_max: int | None = DEFAULT_T_MAX
    t_max_margin: int = 0
    budget_excludes_system: bool = False
    budget_stages: tuple[int, ...] = (2, 3)
    n_max: int | None = None
    stage3_max_turns: int = 8
    carry_questions: bool = False
    auto_retrieve_k: int = 3
    keep_stage12_turns: bool = True
    stage1_window: int | None = None
    stage2_reset: bool = True
    over_budget: Literal["record", "drop_oldest"] = "record"
    id_space: int = DEFAULT_ID_SPACE
    stage_tools: tuple[tuple[str, ...], ...] = PAPER_STAGE_TOOLS
    native_tools: bool = False
    system_prompt: Literal["full", "compact"] = "full"
    filter_theta: float = DEFAULT_THETA
    search_mode: SearchMode = "dense"
    dedupe_threshold: float | None = None
    chunk_tokens: int = 4096
    chunk_overlap: int = 100
    atommem_top_k: int = 6
    max_chunk_steps: int = 40

    def __post_init__(self) -> None:
        _require(self.method in ("agemem", "atommem"), "method must be 'agemem' or 'atommem'")
        _require(self.t_max is None or self.t_max >= 1, "t_max must be >= 1 or None")
        _require(self.t_max_margin >= 0, "t_max_margin must be >= 0")
        _require(self.n_max is None or self.n_max >= 1, "n_max must be >= 1 or None")
        _require(self.stage3_max_turns >= 1, "stage3_max_turns must be >= 1")
        _require(
            self.stage1_window is None or self.stage1_window >= 1,
            "stage1_window must be >= 1 or None",
        )
        _require(
            self.over_budget in ("record", "drop_oldest"),
            "over_budget must be 'record' or 'drop_oldest'",
        )
        _require(self.auto_retrieve_k >= 0, "auto_retrieve_k must be >= 0 (0: show none)")
        _require(
            isinstance(self.id_space, int) and self.id_space >= 1,
            "id_space must be an int >= 1 (the size of the first space of short ids)",
        )
        _require(len(self.stage_tools) == 3, "stage_tools needs one tuple of names per stage")
        _require(set(self.budget_stages) <= {1, 2, 3}, "budget_stages may hold only 1, 2, 3")
        _require(0.0 <= self.filter_theta <= 1.0, "filter_theta must be in [0, 1]")
        _require(
            0 <= self.chunk_overlap < self.chunk_tokens, "need 0 <= chunk_overlap < chunk_tokens"
        )
        _require(self.atommem_top_k >= 1, "atommem_top_k must be >= 1")
        _require(self.max_chunk_steps >= 1, "max_chunk_steps must be >= 1")

    def with_(self, **changes: Any) -> EnvConfig:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def budget_for(self, task: Task) -> int:
        """`t_max`, or the task's own budget plus `t_max_margin` when `t_max` is None."""
        if self.t_max is not None:
            return self.t_max
        hint = task.metadata.get("t_max")
        if isinstance(hint, bool) or not isinstance(hint, int) or hint < 1:
            raise EnvConfigError(
                f"EnvConfig {self.name!r} takes the budget from the task (t_max=None) but task "
                f"{task.id!r} has no positive int metadata['t_max']; set EnvConfig.t_max"
            )
        return hint + self.t_max_margin

    @classmethod
    def preset(cls, name: str) -> EnvConfig:
        if name not in PRESETS:
            raise EnvConfigError(f"unknown env preset {name!r}; choose one of {sorted(PRESETS)}")
        return PRESETS[name]


def _require(ok: bool, problem: str) -> None:
    if not ok:
        raise EnvConfigError(f"invalid EnvConfig: {problem}")


PRESETS: dict[str, EnvConfig] = {
    # AgeMem as published: 8,192-token window counted whole, the paper's stage tools (ids shown
    # as `mem_<n>`, ours, as in every preset).
    "paper": EnvConfig(name="paper"),
    # The shape a tiny word-level model learned on 2 CPU cores: a tight budget on top of the
    # system prompt, top-2 auto-retrieval, incoming messages only in stages 1-2,
    # a compact prompt, a short stage 3 (about 13 turns per episode), and stage-1 prompts that
    # show only the current message with its memories. The budget is the task's (44 tokens for
    # the default curriculum) plus 86 for the stage-3 retrieval turn. Measured over 40 tasks with
    # the oracle's turns and the tiny tokenizer (tool-call JSON as single tokens), tokens over the
    # system prompt at the answer step: no note filtered 138-148, one 123-137, two 116-132, three
    # 101-107, four 94; so doing nothing overflows the 130, one Filter fits half the time and two
    # or more fit. (ApproxTokenCounter counts ~25 more.)
    "synthetic": EnvConfig(
        name="synthetic",
        t_max=None,
        t_max_margin=86,
        budget_excludes_system=True,
        stage3_max_turns=3,
        auto_retrieve_k=2,
        keep_stage12_turns=False,
        stage1_window=1,
        system_prompt="compact",
    ),
    # Real text for a small model on a CPU (SmolLM2-135M; ours): the compact prompt (178
    # SmolLM2 tokens against the full one's 580), one stage-1 message per prompt with its top-2
    # memories, only the incoming messages kept in stages 1-2, three stage-3 turns per question,
    # and a 1,024-token window counted whole, the budget of the HotpotQA benchmark. Measured
    # with the oracle on 60 training tasks of the HotpotQA/LoCoMo/synthetic mix and SmolLM2's
    # tokenizer: HotpotQA episodes take 23.5 turns of 380 prompt tokens on average (LoCoMo
    # training tasks 14.8 of 312), and with a quarter of its stage-2 notes left in, the
    # oracle's HotpotQA answer context went over 1,024 tokens in 17% of episodes: the budget
    # binds when notes are kept.
    "compact": EnvConfig(
        name="compact",
        t_max=1024,
        stage3_max_turns=3,
        auto_retrieve_k=2,
        keep_stage12_turns=False,
        stage1_window=1,
        system_prompt="compact",
    ),
    # AtomMem as published: 4K-token chunks with 100-token overlap, top-6 memories, 40 steps.
    "atommem": EnvConfig(name="atommem", method="atommem"),
}
