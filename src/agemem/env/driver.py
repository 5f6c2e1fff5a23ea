"""`run_episodes`: many episodes at once, in lockstep or streamed.

Every (task, rollout) pair gets its own env, hence its own private store and context.

- Lockstep (the default, for a policy that batches: `HFPolicy`, the scripted ones): at each step
  the contexts of all live episodes go to the policy together; episodes that finish drop out
  while the others go on. The live episodes are grouped by the tools their stage offers (one
  call per group), since one `act` call takes one tool list. Deterministic: the same calls in
  the same order on every run (what the eval journal replays).
- Streamed (`in_flight=N`, for a policy behind an inference server with continuous batching:
  `LlamaCppPolicy`, `VLLMPolicy`): each episode's next context is sent, alone, as soon as its
  last turn is back, with at most N requests in flight; the env steps run in the calling thread
  as turns arrive. No episode waits for the slowest turn of a batch or for another stage's
  group. The order the requests reach the server then depends on timing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from rich.progress import Progress

from agemem.env.agemem import MemoryEnv
from agemem.env.atommem import AtomMemEnv
from agemem.env.base import EpisodeEnv
from agemem.env.config import PRESETS, EnvConfig
from agemem.env.embed_cache import cached
from agemem.env.record import EnvError, Expert
from agemem.episode import Episode
from agemem.memory.embed import Embedder, default_embedder
from agemem.policy.base import Message, Policy, Turn
from agemem.summarize import Summarizer
from agemem.tasks.base import Task, incoming_text
from agemem.tokens import ApproxTokenCounter, HFTokenCounter, TokenCounter

Env = MemoryEnv | AtomMemEnv


def make_env(
    config: EnvConfig,
    *,
    embedder: Embedder | None = None,
    token_counter: TokenCounter | None = None,
    summarizer: Summarizer | None = None,
    seed: int = 0,
) -> Env:
    """The env for `config.method`, each with a private store per episode."""
    if config.method == "atommem":
        return AtomMemEnv(config, embedder=embedder, token_counter=token_counter, seed=seed)
    return MemoryEnv(
        config, embedder=embedder, token_counter=token_counter, summarizer=summarizer, seed=seed
    )


def policy_token_counter(policy: Policy) -> TokenCounter:
    """The policy's own tokenizer when it has one (`HFPolicy.tokenizer`), else the approximation."""
    tokenizer = getattr(policy, "tokenizer", None)
    return HFTokenCounter(tokenizer) if tokenizer is not None else ApproxTokenCounter()


def run_episodes(
    policy: Policy | Expert,
    tasks: Sequence[Task],
    config: EnvConfig = PRESETS["paper"],
    k: int = 1,
    progress: bool = True,
    *,
    embedder: Embedder | None = None,
    token_counter: TokenCounter | None = None,
    summarizer: Summarizer | None = None,
    seed: int = 0,
    reward_fn: Callable[[Episode], dict[str, float]] | None = None,
    max_batch: int | None = None,
    in_flight: int | None = None,
) -> list[Episode]:
    """`k` episodes per task (task order, then rollout order), each `k` sharing a `group_id`
    (`<task id>@<task index>`, unique even when a task is listed twice) for GRPO.

    Embeddings go through a `CachingEmbedder` (one per embedder, kept between calls).
    `token_counter` defaults to the policy's tokenizer; `seed` makes the envs' id aliases
    reproducible; `reward_fn`, if given, fills each episode's `reward`; `max_batch` caps the
    contexts per `act` call (None: every live episode at once); `in_flight` streams the
    episodes instead, at most that many requests at once (see the module's docstring).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1 episodes per task, got {k}")
    embedder = cached(embedder or default_embedder())
    counter = token_counter or policy_token_counter(policy)
    slots = [(task, f"{task.id}@{t}") for t, task in enumerate(tasks) for _ in range(k)]
    envs = [
        make_env(
            config,
            embedder=embedder,
            token_counter=counter,
            summarizer=summarizer,
            seed=seed * 1_000_003 + i,
        )
        for i in range(len(slots))
    ]
    if config.method == "agemem":
        embedder.embed(sorted(_known_texts(tasks)))  # one batch now instead of one call per use
    return drive(
        policy,
        envs,
        slots,
        progress=progress,
        reward_fn=reward_fn,
        max_batch=max_batch,
        in_flight=in_flight,
    )


def drive(
    policy: Policy | Expert,
    envs: Sequence[EpisodeEnv],
    slots: Sequence[tuple[Task, str]],
    *,
    progress: bool = False,
    reward_fn: Callable[[Episode], dict[str, float]] | None = None,
    max_batch: int | None = None,
    in_flight: int | None = None,
) -> list[Episode]:
    """Run `envs[i]` on `slots[i]` = (task, group id) to the end, all at once: in lockstep, one
    `policy.act` call per step over every live episode (in calls of at most `max_batch`
    contexts), or streamed with at most `in_flight` single-context calls at once. Closes the
    envs; episodes in slot order."""
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 contexts per call (or None), got {max_batch}")
    if in_flight is not None and (in_flight < 1 or isinstance(policy, Expert)):
        raise ValueError(
            f"in_flight must be >= 1 requests (or None) and needs a Policy, got {in_flight} "
            f"with {type(policy).__name__}"
        )
    episodes: list[Episode | None] = [None] * len(slots)
    try:
        contexts = {i: envs[i].reset(task) for i, (task, _) in enumerate(slots)}
        with Progress(disable=not progress, transient=True) as bar:
            job = bar.add_task("episodes", total=len(slots))

            def finish(i: int) -> None:
                episodes[i] = _finished(envs[i], slots[i][1], reward_fn)
                bar.advance(job)

            if in_flight is not None:
                assert not isinstance(policy, Expert)
                _stream(policy, envs, contexts, in_flight, finish)
            while contexts:
                for i, context in _step_all(policy, envs, contexts, max_batch).items():
                    if context is None:
                        finish(i)
                        del contexts[i]
                    else:
                        contexts[i] = context
    finally:
        for env in envs:
            env.close()
    return [e for e in episodes if e is not None]


def _known_texts(tasks: Sequence[Task]) -> set[str]:
    """Texts AgeMem episodes embed for sure: the stage-1 messages (auto-retrieval queries), the
    distractors (filtered messages) and the questions (retrieval queries)."""
    texts: set[str] = set()
    for task in tasks:
        texts.update(incoming_text(m) for m in task.contextual)
        texts.update(task.distractors)
        texts.update(q.text for q in task.questions)
    return texts


def _step_all(
    policy: Policy | Expert,
    envs: list[Env],
    contexts: dict[int, list[Message]],
    max_batch: int | None = None,
) -> dict[int, list[Message] | None]:
    """One turn for every live episode: the next context, or None when the episode ended. A
    policy reads the contexts; an expert reads the envs' records of them (`env.view`)."""
    groups: dict[str, list[int]] = defaultdict(list)
    tools_of = {}
    for i in contexts:
        tools = envs[i].tools()
        key = repr(tools)
        groups[key].append(i)
        tools_of[key] = tools
    out: dict[int, list[Message] | None] = {}
    size = max_batch or len(contexts)
    calls = [
        (key, group[start : start + size])
        for key, group in groups.items()
        for start in range(0, len(group), size)
    ]
    for key, indices in calls:
        if isinstance(policy, Expert):
            turns = policy.act_on([envs[i].view for i in indices], tools_of[key])
        else:
            turns = policy.act([contexts[i] for i in indices], tools_of[key])
        _check_turns(policy, turns, len(indices))
        for i, turn in zip(indices, turns, strict=True):
            result = envs[i].step(turn)
            out[i] = None if result.done else result.context
    return out


def _stream(
    policy: Policy,
    envs: list[Env],
    contexts: dict[int, list[Message]],
    in_flight: int,
    finish: Callable[[int], None],
) -> None:
    """Every episode of `contexts` to its end, each turn requested alone as soon as the
    episode's last one is back, at most `in_flight` at once; `contexts` is emptied."""
    waiting = list(contexts)  # episodes whose next turn is not yet requested, in slot order

    def request(pool: ThreadPoolExecutor, i: int) -> Future[list[Turn]]:
        return pool.submit(policy.act, [contexts[i]], envs[i].tools())

    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        pending = {request(pool, i): i for i in waiting[:in_flight]}
        del waiting[:in_flight]
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=pending.__getitem__):
                    i = pending.pop(future)
                    turns = future.result()
                    _check_turns(policy, turns, 1)
                    result = envs[i].step(turns[0])
                    if result.done:
                        del contexts[i]
                        finish(i)
                    else:
                        contexts[i] = result.context
                        waiting.append(i)
                while waiting and len(pending) < in_flight:
                    i = waiting.pop(0)
                    pending[request(pool, i)] = i
        finally:
            for future in pending:
                future.cancel()


def _check_turns(policy: Policy | Expert, turns: list[Turn], contexts: int) -> None:
    if len(turns) != contexts:
        raise EnvError(
            f"{type(policy).__name__}.act returned {len(turns)} turns for {contexts} "
            "contexts; a Policy must return one turn per context, in order"
        )


def _finished(
    env: Env, group_id: str, reward_fn: Callable[[Episode], dict[str, float]] | None
) -> Episode:
    episode = env.episode(group_id)
    if reward_fn is not None:
        episode.reward = reward_fn(episode)
    env.close()
    return episode
