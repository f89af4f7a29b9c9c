"""Condor: SFT data synthesised from a knowledge tree, then refined by the model's own critique.

What it computes. For every tag path ``(domain, topic, tag)`` of a World Knowledge Tree and every task type, one
LLM call writes three questions marked ``[Easy]/[Medium]/[Hard][Question Start]...[Question End]``; the asked-for
difficulties are kept, near-duplicate questions are removed (cosine similarity of L2-normalised ``minilm``
embeddings in a faiss ``IndexFlatIP``, greedy in candidate order), and the same model answers each question
("Condor Void"). With ``--refine`` (default) the model then critiques its answer
(``[Critique Start][Strength Start]...[Suggestion End][Critique End]``) and rewrites it from that critique
(``[Improved Answer Start]...[Improved Answer End]``, "Condor Refine"). The output is an SFT version: ``messages``
holds the question and the refined (or, with ``--no-refine``, the void) answer, beside ``tag_path``, ``task``,
``difficulty``, ``question``, ``response_void``, ``critique``, ``response_refined``; ``decisions.parquet`` gives
every candidate (tag path x task x round x asked difficulty) a ``kept`` flag and a ``reason``.

Paper: Cao, Zhang, Li, Zhang, Liu, Duan, Zhang, Chen. "Condor: Enhance LLM Alignment with Knowledge-Driven Data
Synthesis and Refinement", ACL 2025, arXiv 2501.12273 (InternLM/Condor).

Departures from the paper:
- one model does everything, as in the paper's self-iteration runs; any backend (``hf``, ``llamacpp``, ``openai``,
  ``vllm``);
- near-duplicate removal is ours (the paper does not describe de-duplication);
- a candidate with a malformed or empty critique or rewrite is dropped (the paper does not say; notes §5.2 [ours]);
- ``--per-tag N`` asks each (tag, task) prompt N times (N sampled replies, up to 3N questions);
- one critique -> refine pass (the paper lists multi-round refinement as future work);
- no trending-topic augmentation of the tree; prompts are our own wording, each with one worked example turn
  (see ``curate/synthesizers/prompts.py``);
- ``--lenient`` (off by default) loosens parsing for small models that ignore the markers; SmolLM2-135M, the
  embedded default, writes usable questions and answers only that way, and no well-formed critique at all, so on
  it ``--lenient --no-refine`` is the setting that yields rows.

Every LLM call is cached under ``<store>/cache/llm/`` by (generator identity, sampling settings, prompt, n),
``--batch-size`` replies per shard, so a killed run resumes where it stopped and a re-run with another ``--name``
generates nothing. Each stage's calls are a batch map run by ``curate.engine``: in this process by default, or
with ``--engine ray`` on a Ray actor pool whose workers load the model once per stage; the same batches give the
same replies into the same cache, so the version is the same either way and a run of either kind resumes the
other's. Near-duplicate removal runs on the driver, over the gathered questions.

    curate synth condor --name condor-demo --limit 12 --tasks daily_chat,domain_qa --max-tokens 256 --lenient
    curate synth condor --name condor-big --backend openai --base-url http://localhost:8000/v1 \
        --model Qwen/Qwen2.5-7B-Instruct
    curate synth condor --name condor-ray --model /models/Qwen2.5-7B-Instruct --engine ray --num-workers 8 \
        --gpus-per-worker 1
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from curate import options
from curate.engine import Engine, run_batches
from curate.errors import CurateError
from curate.records import MESSAGES, row_id
from curate.store import Store, Version, validate_name
from curate.synthesizers import prompts as P
from curate.synthesizers.tree import TagPath, expand, interleaved_leaves, load_tree, tree_hash

DATA_SOURCE = "condor"
#: settings that change where and how fast the calls run, never what they return; kept out of version ids
EXECUTION_ONLY = ("batch_size", "run")
CRITIQUE = pa.struct(
    [("strength", pa.string()), ("weakness", pa.string()), ("suggestion", pa.string()), ("text", pa.string())]
)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("messages", MESSAGES),
        ("prompt", MESSAGES),
        ("data_source", pa.string()),
        ("tag_path", pa.list_(pa.string())),
        ("task", pa.string()),
        ("difficulty", pa.string()),
        ("round", pa.int32()),
        ("question", pa.string()),
        ("response_void", pa.string()),
        ("critique", CRITIQUE),
        ("response_refined", pa.string()),
    ]
)
DECISIONS = pa.schema(
    [
        ("id", pa.string()),
        ("score", pa.float64()),
        ("kept", pa.bool_()),
        ("reason", pa.string()),
        ("stage", pa.string()),
        ("detail", pa.string()),
        ("tag_path", pa.list_(pa.string())),
        ("task", pa.string()),
        ("difficulty", pa.string()),
        ("round", pa.int32()),
    ]
)


# ================================================================================================ config
@dataclass
class CondorConfig:
    """Settings of one Condor run; ``curate synth condor`` derives its ``--flags`` from these fields."""

    tree: str = "builtin"
    """Knowledge tree YAML (domain -> topic -> [tags]) or ``builtin`` for curate's seed tree."""
    model: str = "smollm2-135m"
    """The one model that writes, answers, critiques and refines (alias, local dir or hub / served model id)."""
    backend: str = "auto"
    """Generation backend: ``auto`` (``llamacpp`` on a CPU when llama-cpp-python is installed and the model is a
    GGUF file, as the embedded default is; else ``hf``), ``hf`` (in-process, CPU-capable), ``llamacpp``, ``openai``
    (a served model) or ``vllm``. The version records the backend that ran."""
    base_url: str | None = None
    """Server URL for ``--backend openai``, e.g. ``http://localhost:8000/v1``."""
    tasks: tuple[str, ...] = tuple(P.TASKS)
    """Task types to synthesise, comma-separated: role_playing, daily_chat, domain_qa, material_processing,
    format_control, opinion, creation."""
    difficulties: tuple[str, ...] = P.DIFFICULTIES
    """Difficulties to keep from each three-question reply (the model is always asked for all three)."""
    per_tag: int = 1
    """Question-synthesis replies sampled per (tag path, task); each yields one question per kept difficulty."""
    limit: int | None = None
    """Use at most this many tag paths, taken one domain at a time in turn (so a prefix spans the domains)."""
    refine: bool = True
    """Critique and rewrite each answer (Condor Refine); ``--no-refine`` keeps the first answer (Condor Void)."""
    expand: bool = False
    """Grow every topic with LLM-proposed tags before synthesis (the paper's tag-expansion step)."""
    expand_tags: int = 5
    """With ``--expand``: at most this many new tags per topic."""
    temperature: float = 0.7
    """Sampling temperature of every call (0 = greedy)."""
    max_tokens: int = 512
    """Most new tokens per call."""
    lenient: bool = False
    """Accept replies of small models that ignore the markers (see ``curate/synthesizers/prompts.py``): three question
    blocks or numbered lines read in order, a critique or rewrite without any marker taken whole."""
    dedup_threshold: float = 0.9
    """Drop a question whose cosine similarity to an earlier kept question is at least this (1.0 = exact only)."""
    embedder: str = "minilm"
    """Sentence embedder for near-duplicate removal."""
    batch_size: int = 16
    """Prompts per generate call, and per cache shard (what a killed run can lose)."""
    seed: int = 0
    """Base sampling seed; every (prompt, sample) derives its own seed from it."""
    run: Engine = field(default_factory=Engine)
    """Where the work runs (``curate.engine.Engine``: ``--engine``, ``--ray-address``, ``--num-workers``,
    ``--gpus-per-worker``); never part of the version id."""

    def __post_init__(self) -> None:
        from curate.generation import AUTO, GENERATORS, resolve_backend

        self.tasks = _as_tuple(self.tasks)
        self.difficulties = tuple(d.lower() for d in _as_tuple(self.difficulties))
        if not self.tasks:
            raise CurateError("--tasks: give at least one task")
        if bad := [t for t in self.tasks if t not in P.TASKS]:
            raise CurateError(f"--tasks: unknown task(s) {', '.join(bad)} (available: {', '.join(P.TASKS)})")
        if len(set(self.tasks)) != len(self.tasks):
            raise CurateError("--tasks: a task is listed twice")
        if not self.difficulties:
            raise CurateError("--difficulties: give at least one of easy, medium, hard")
        if bad := [d for d in self.difficulties if d not in P.DIFFICULTIES]:
            raise CurateError(f"--difficulties: unknown difficulty {', '.join(bad)} (available: easy, medium, hard)")
        if len(set(self.difficulties)) != len(self.difficulties):
            raise CurateError("--difficulties: a difficulty is listed twice")
        if self.backend != AUTO and self.backend not in GENERATORS:
            raise CurateError(f"--backend {self.backend!r}: unknown backend (available: {', '.join(GENERATORS)})")
        if self.base_url is not None and self.backend != "openai":
            raise CurateError(f"--base-url is only read by --backend openai (got --backend {self.backend})")
        for flag, value, low in (
            ("--per-tag", self.per_tag, 1),
            ("--expand-tags", self.expand_tags, 1),
            ("--max-tokens", self.max_tokens, 1),
            ("--batch-size", self.batch_size, 1),
        ):
            if not isinstance(value, int) or value < low:
                raise CurateError(f"{flag} must be an integer >= {low}, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise CurateError(f"--limit must be an integer >= 1, got {self.limit!r}")
        if self.temperature < 0:
            raise CurateError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.dedup_threshold <= 1:
            raise CurateError(f"--dedup-threshold must be in (0, 1], got {self.dedup_threshold}")
        self.runner()
        # Not a field (the recipe drops the backend; the generator identity names the one that ran).
        self._backend = resolve_backend(self.backend, self.model, self.runner())

    def backend_name(self) -> str:
        """The backend that runs (``auto`` resolved, see ``curate.generation.resolve_backend``)."""
        return self._backend

    def runner(self) -> Engine:
        """Where the LLM calls run (``curate.engine``)."""
        return self.run

    def generator_options(self) -> dict[str, Any]:
        from curate.generation import engine_options

        opts = {"base_url": self.base_url, "batch_size": self.batch_size}
        return {**opts, **engine_options(self.backend_name(), self.runner())}

    def recipe(self) -> dict[str, Any]:
        """The fields that decide the output (the tree by content, the model by identity, elsewhere)."""
        d = dataclasses.asdict(self)
        for k in ("tree", "model", "backend", "base_url", "embedder", *EXECUTION_ONLY):
            d.pop(k)
        d["tasks"], d["difficulties"] = list(self.tasks), list(self.difficulties)
        return d


def _as_tuple(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = v.split(",")
    return tuple(s.strip() for s in v if s.strip())


# ================================================================================================ LLM cache
@dataclass
class StageStats:
    """Per stage: prompts asked (``cached`` + ``generated``), and replies cut off at ``--max-tokens``."""

    prompts: int = 0
    cached: int = 0
    generated: int = 0
    truncated: int = 0


class CachedLLM:
    """A generator behind the ``llm`` row cache: replies are keyed by (identity, sampling, prompt, n).

    Misses go to the generator ``batch_size`` prompts per ``generate`` call, and each batch is published as a cache
    shard at once, so a killed run loses at most one batch. With ``engine`` ``ray`` the batches go to a Ray actor
    pool instead, each worker building the generator ``task`` describes (``{"backend", "model", "options"}``)
    once per ``complete`` call (a stage); replies are cached ``batch_size`` at a time in the order they arrive.
    The batches, and so the replies, are the same either way.

    Example:
        >>> llm = CachedLLM(make_generator("hf"), store, Sampling(max_tokens=64), batch_size=16)   # doctest: +SKIP
        >>> llm.complete([[{"role": "user", "content": "Hi"}]], stage="demo")[0][0]["text"]          # doctest: +SKIP
    """

    def __init__(
        self,
        generator: Any,
        store: Store,
        sampling: Any,
        *,
        batch_size: int = 16,
        identity: dict[str, Any] | None = None,
        engine: Engine | None = None,
        task: dict[str, Any] | None = None,
    ):
        from curate.cache import RowCache, settings_key

        self.generator, self.sampling, self.batch_size = generator, sampling, batch_size
        self.engine, self.task = engine or Engine(), task
        if self.engine.is_ray and task is None:
            raise CurateError("--engine ray: the workers need the generator's backend, model and options")
        settings = {"generator": identity or generator.identity(), "sampling": sampling.as_dict()}
        self.cache = RowCache(store, "llm", settings_key(settings), settings)
        self.stats: dict[str, StageStats] = {}
        self._done: dict[str, dict] | None = None

    def complete(self, prompts: Sequence[list[dict[str, str]]], *, n: int = 1, stage: str = "llm") -> list[list[dict]]:
        """``n`` replies per prompt, each ``{"text", "finish_reason", "tokens"}``, in prompt order."""
        from curate.cache import content_key
        from curate.progress import progress

        st = self.stats.setdefault(stage, StageStats())
        keys = [content_key({"messages": p, "n": n}) for p in prompts]
        if self._done is None:
            # Read the shards once per run: every stage would otherwise re-read all of them.
            self._done = self.cache.load()
        done = self._done
        todo: dict[str, list[dict[str, str]]] = {}
        for k, p in zip(keys, prompts, strict=True):
            if k not in done and k not in todo:
                todo[k] = p
        st.prompts += len(prompts)
        st.cached += len(prompts) - sum(1 for k in keys if k in todo)
        pending = list(todo.items())
        chunks = [pending[start : start + self.batch_size] for start in range(0, len(pending), self.batch_size)]
        packed = [([k for k, _ in chunk], [p for _, p in chunk]) for chunk in chunks]
        spec = None
        if self.engine.is_ray:
            from curate.generation import generation_task

            t = self.task
            assert t is not None  # checked in __init__
            spec = generation_task(t["backend"], t["model"], t["options"], n=n, sampling=self.sampling)
        shard: list[dict[str, Any]] = []

        def flush() -> None:
            rows = shard[:]
            shard.clear()  # first: a write that fails is not retried by the flush in ``finally``
            if rows:
                self.cache.write(rows)
                done.update({r["key"]: r for r in rows})

        def generate(batch: list[list[dict[str, str]]]) -> list[Any]:
            return self.generator.generate(batch, n=n, sampling=self.sampling)

        with progress(f"condor {stage}", len(pending)) as advance:
            try:
                # Ray hands results back in any order; a shard holds a batch's worth of replies either way.
                for k, cs in run_batches(packed, spec=spec, engine=self.engine, fn=None if spec else generate):
                    if len(cs) != n:
                        raise CurateError(f"condor {stage}: the backend returned {len(cs)} replies, expected {n}")
                    shard.append(
                        {
                            "key": k,
                            "texts": [c.text for c in cs],
                            "finish": [c.finish_reason for c in cs],
                            "tokens": [int(c.tokens) for c in cs],
                        }
                    )
                    advance(1)
                    if len(shard) >= self.batch_size:
                        flush()
            finally:
                flush()  # whatever finished survives an interrupted run
        st.generated += sum(1 for k in keys if k in todo)  # a prompt asked twice counts twice: prompts = cached + this
        replies = []
        for k in keys:
            r = done[k]
            replies.append(
                [
                    {"text": t, "finish_reason": f, "tokens": c}
                    for t, f, c in zip(r["texts"], r["finish"], r["tokens"], strict=True)
                ]
            )
            st.truncated += sum(f == "length" for f in r["finish"])
        return replies

    def texts(self, stage: str) -> Callable[[list[list[dict[str, str]]]], list[str]]:
        """A ``prompts -> first reply texts`` function (what ``tree.expand`` takes)."""
        return lambda prompts: [r[0]["text"] for r in self.complete(prompts, stage=stage)]


# ================================================================================================ candidates
@dataclass
class Candidate:
    """One (tag path, task, round, difficulty) slot and what became of it."""

    tag_path: TagPath
    task: str
    round: int
    difficulty: str
    question: str | None = None
    response_void: str | None = None
    critique: P.Critique | None = None
    response_refined: str | None = None
    reason: str | None = None
    stage: str | None = None
    detail: str | None = None
    no_markers: list[str] = field(default_factory=list)
    """Stages whose reply a lenient parse accepted without markers."""

    @property
    def id(self) -> str:
        return row_id(
            {"tag_path": list(self.tag_path), "task": self.task, "round": self.round, "difficulty": self.difficulty}
        )

    @property
    def alive(self) -> bool:
        return self.reason is None

    def drop(self, reason: str, stage: str, detail: str | None = None) -> None:
        self.reason, self.stage, self.detail = reason, stage, detail


def near_duplicates(texts: Sequence[str], threshold: float, embedder: str = "minilm") -> list[int | None]:
    """For each text, the index of an earlier kept text it nearly duplicates (cosine >= threshold), else None.

    Greedy in order: a text is compared only with texts kept before it, so the first of a cluster stays.

    >>> near_duplicates(["How do I bake bread?", "How do I bake bread?", "What is a comet?"], 0.9)  # doctest: +SKIP
    [None, 0, None]
    """
    if len(texts) < 2:
        return [None] * len(texts)
    import faiss
    import numpy as np

    from curate.models import load_embedder

    vecs = np.asarray(
        load_embedder(embedder).encode(list(texts), batch_size=64, convert_to_numpy=True), dtype=np.float32
    )
    vecs = np.ascontiguousarray(vecs)
    faiss.normalize_L2(vecs)
    index = faiss.IndexFlatIP(vecs.shape[1])
    index.add(vecs)
    # range_search keeps similarities strictly above the radius; the epsilon makes the threshold inclusive and
    # lets identical texts (similarity 1 up to rounding) count at threshold 1.0.
    lims, sims, ids = index.range_search(vecs, threshold - 1e-5)
    out: list[int | None] = [None] * len(texts)
    for i in range(len(texts)):
        earlier = sorted(int(j) for j in ids[lims[i] : lims[i + 1]] if j < i and out[j] is None)
        if earlier:
            out[i] = earlier[0]
    return out


# ================================================================================================ pipeline
def synth_condor(
    config: CondorConfig | None = None, *, name: str, store: Store | str | None = None, **overrides: Any
) -> Version:
    """Run Condor synthesis and commit the SFT version ``name``; a re-run of the same recipe is free.

    >>> v = synth_condor(name="condor-demo", limit=4, tasks=("daily_chat",), max_tokens=128)  # doctest: +SKIP
    >>> v.to_pylist()[0]["messages"]                                                            # doctest: +SKIP
    """
    from curate.generation import Sampling, check_ray_generator, make_generator
    from curate.models import resolve
    from curate.store import get_store

    if overrides:
        known = {p.name for p in options.params_of(CondorConfig)}
        if bad := sorted(set(overrides) - known):
            accepted = ", ".join(sorted(known))
            raise CurateError(f"synth condor: unknown option(s) {', '.join(bad)} (options: {accepted})")
        config = options.build(CondorConfig, overrides, base=config or CondorConfig())
    config = config or CondorConfig()
    s = get_store(store)
    validate_name(name)

    seed_tree = load_tree(config.tree)
    generator = make_generator(config.backend_name(), config.model, **config.generator_options())
    runner = config.runner()
    check_ray_generator(runner, generator, config.backend_name(), config.model, config.generator_options())
    identity = generator.identity()
    embedder_id = resolve(config.embedder).identity
    op = {
        "name": "synth",
        "method": "condor",
        "config": config.recipe(),
        "tree": tree_hash(seed_tree),
        "generator": identity,
        "prompts": P.prompts_hash(),
        "embedder": embedder_id,
    }

    def compute() -> dict[str, Any]:
        sampling = Sampling(temperature=config.temperature, max_tokens=config.max_tokens, seed=config.seed)
        task = {"backend": config.backend_name(), "model": config.model, "options": config.generator_options()}
        llm = CachedLLM(
            generator, s, sampling, batch_size=config.batch_size, identity=identity, engine=runner, task=task
        )
        timings: dict[str, float] = {}
        t = time.perf_counter()

        tree, expand_report = seed_tree, None
        if config.expand:
            tree, expand_report = expand(seed_tree, llm.texts("expand"), max_new=config.expand_tags)
            timings["expand_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
        paths = interleaved_leaves(tree)[: config.limit]

        # ---- questions: one call per (tag path, task), per_tag sampled replies each
        jobs = [(path, task) for path in paths for task in config.tasks]
        replies = llm.complete(
            [P.question_prompt(*path, task) for path, task in jobs], n=config.per_tag, stage="questions"
        )
        cands: list[Candidate] = []
        forms: list[str] = []
        for (path, task), samples in zip(jobs, replies, strict=True):
            for r, reply in enumerate(samples):
                parsed = P.parse_questions(reply["text"], lenient=config.lenient)
                forms.append(parsed.form or "failed")
                for d in config.difficulties:
                    c = Candidate(path, task, r, d, question=parsed.questions.get(d))
                    if c.question is None:
                        c.drop(parsed.reasons[d], "question")
                    cands.append(c)
        alive = [c for c in cands if c.alive]
        for c, dup in zip(
            alive, near_duplicates([c.question for c in alive], config.dedup_threshold, config.embedder), strict=True
        ):
            if dup is not None:
                c.drop("near_duplicate", "dedup", alive[dup].id)
        timings["questions_s"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()

        # ---- Condor Void: the same model answers
        alive = [c for c in cands if c.alive]
        for c, reply in zip(
            alive, llm.complete([P.answer_prompt(c.question) for c in alive], stage="answers"), strict=True
        ):
            c.response_void, reason = P.parse_answer(reply[0]["text"])
            if reason:
                c.drop(reason, "answer")
        timings["answers_s"] = round(time.perf_counter() - t, 3)

        # ---- Condor Refine: critique, then rewrite from the critique
        if config.refine:
            t = time.perf_counter()
            alive = [c for c in cands if c.alive]
            for c, reply in zip(
                alive,
                llm.complete([P.critique_prompt(c.question, c.response_void) for c in alive], stage="critiques"),
                strict=True,
            ):
                c.critique, reason, detail = P.parse_critique(reply[0]["text"], lenient=config.lenient)
                reason, detail = _truncated(c, "critique", reply[0], reason, detail)
                if reason:
                    c.drop(reason, "critique", detail)
            timings["critiques_s"] = round(time.perf_counter() - t, 3)
            t = time.perf_counter()
            alive = [c for c in cands if c.alive]
            prompts = [P.refine_prompt(c.question, c.response_void, c.critique) for c in alive]
            for c, reply in zip(alive, llm.complete(prompts, stage="refines"), strict=True):
                c.response_refined, reason, detail = P.parse_refined(reply[0]["text"], lenient=config.lenient)
                reason, detail = _truncated(c, "refine", reply[0], reason, detail)
                if reason:
                    c.drop(reason, "refine", detail)
            timings["refines_s"] = round(time.perf_counter() - t, 3)

        table, decisions = _tables(cands, config.refine)
        stats = _stats(cands, config, llm, forms, len(paths), expand_report)
        extra = {
            "synth": {
                "method": "condor",
                "tree_hash": tree_hash(seed_tree),
                "tree_source": config.tree,
                "expanded_tree_hash": tree_hash(tree) if config.expand else None,
                "model_identity": identity,
                "prompts_hash": P.prompts_hash(),
                "embedder": embedder_id,
                "config": {**dataclasses.asdict(config), "backend": config.backend_name()},
            }
        }
        return {"table": table, "decisions": decisions, "stats": stats, "extra": extra, "timings": timings}

    return s.materialise(name, [], op, compute)


def _truncated(
    c: Candidate, stage: str, reply: dict, reason: str | None, detail: str | None
) -> tuple[str | None, str | None]:
    if reason is None and detail == P.NO_MARKERS:
        # Without markers nothing proves the reply is complete: one cut off by --max-tokens is not taken.
        if reply["finish_reason"] == "length":
            return "truncated", P.NO_MARKERS
        c.no_markers.append(stage)
    return reason, detail


def _tables(cands: list[Candidate], refine: bool) -> tuple[pa.Table, pa.Table]:
    rows = []
    for c in cands:
        if not c.alive:
            continue
        answer = c.response_refined if refine else c.response_void
        user = {"role": "user", "content": c.question}
        rows.append(
            {
                "id": c.id,
                "messages": [user, {"role": "assistant", "content": answer}],
                "prompt": [user],
                "data_source": DATA_SOURCE,
                "tag_path": list(c.tag_path),
                "task": c.task,
                "difficulty": c.difficulty,
                "round": c.round,
                "question": c.question,
                "response_void": c.response_void,
                "critique": dataclasses.asdict(c.critique) if c.critique else None,
                "response_refined": c.response_refined,
            }
        )
    decisions = [
        {
            "id": c.id,
            "score": 1.0 if c.alive else 0.0,
            "kept": c.alive,
            "reason": c.reason or "",
            "stage": c.stage or "",
            "detail": c.detail
            if not c.alive
            else (f"{P.NO_MARKERS}: {','.join(c.no_markers)}" if c.no_markers else None),
            "tag_path": list(c.tag_path),
            "task": c.task,
            "difficulty": c.difficulty,
            "round": c.round,
        }
        for c in cands
    ]
    return pa.Table.from_pylist(rows, schema=SCHEMA), pa.Table.from_pylist(decisions, schema=DECISIONS)


def _count(values: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def _stats(
    cands: list[Candidate],
    config: CondorConfig,
    llm: CachedLLM,
    forms: list[str],
    n_paths: int,
    expand_report: dict[str, Any] | None,
) -> dict[str, Any]:
    kept = [c for c in cands if c.alive]
    return {
        "tag_paths": n_paths,
        "candidates": len(cands),
        "kept": len(kept),
        "dropped": len(cands) - len(kept),
        "reasons": _count([c.reason for c in cands if c.reason]),
        "reasons_by_stage": {
            st: _count([c.reason for c in cands if c.stage == st])
            for st in dict.fromkeys(c.stage for c in cands if c.stage)
        },
        "kept_per_task": {t: sum(c.task == t for c in kept) for t in config.tasks},
        "kept_per_difficulty": {d: sum(c.difficulty == d for c in kept) for d in config.difficulties},
        "question_replies": _count(forms),
        "kept_without_markers": _count([st for c in kept for st in c.no_markers]),
        "llm": {stage: dataclasses.asdict(st) for stage, st in llm.stats.items()},
        "expand": expand_report,
    }
