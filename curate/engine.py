"""Where the expensive per-row maps run: in this process (``local``) or on a Ray cluster (``ray``).

Feature extraction, per-token losses, rollouts and the synthesizer's LLM calls are maps over rows whose results
go into resumable ``RowCache`` shards. The driver always decides which rows are missing, packs them into batches
and writes the shards; only the per-batch work moves. That work is a picklable ``TaskSpec`` (a module-level batch
function and its settings, never a closure) run by a ``Worker`` that loads the model once and keeps it: the local
engine runs the batches in-process (a Worker, or for generation the caller's own generator, built from the same
settings), the Ray engine hands the same batches to a Ray Data actor pool (``map_batches`` with a pool of
``num_workers`` actors) and streams results back, in any order, keyed by row key. The same batches run the same code
either way, so both engines give identical values and share one cache: a killed cluster run resumes locally and the
other way round. Engine settings never enter a cache key or a version id. Each ``run_batches`` call starts its own
pool, so a workflow of several dependent maps (Condor's stages) loads the model once per map per worker.

A failure in a worker's batch, or a worker that dies, ends the run with a one-line ``CurateError``; the rows the
driver already received are in the cache.

Ray is an optional extra (``pip install curate[ray]``), imported only when ``engine="ray"``.

    curate select sample-sft --method fisher --engine ray --num-workers 4 --gpus-per-worker 1
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from curate.errors import CurateError

__all__ = ["ENGINES", "Engine", "TaskSpec", "Worker", "run_batches"]

ENGINES = ("local", "ray")

# The row key a Ray worker answers with when its batch failed (row keys are hex digests or ids, never this).
_FAILED = "\x00failed"


@dataclass(frozen=True)
class Engine:
    """How to run a map: ``engine`` ``local`` or ``ray`` (``ray_address`` None starts or joins a local Ray).

    >>> Engine().engine, Engine("ray", num_workers=2).num_workers
    ('local', 2)
    """

    engine: str = "local"
    """Where the work runs: ``local`` (this process) or ``ray`` (an actor pool); does not change the version id."""
    ray_address: str | None = None
    """Ray cluster address (``--engine ray``; none: start or join a local Ray); does not change the version id."""
    num_workers: int = 1
    """Ray workers, each loading its model once (``--engine ray``); does not change the version id."""
    gpus_per_worker: float = 0.0
    """GPUs per Ray worker (``--engine ray``); does not change the version id."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise CurateError(f"--engine {self.engine!r}: unknown engine (available: {', '.join(ENGINES)})")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise CurateError(f"--num-workers must be an integer >= 1, got {self.num_workers!r}")
        if isinstance(self.gpus_per_worker, bool) or not isinstance(self.gpus_per_worker, int | float):
            raise CurateError(f"--gpus-per-worker must be a number >= 0, got {self.gpus_per_worker!r}")
        if self.gpus_per_worker < 0:
            raise CurateError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker!r}")
        if self.engine == "local" and (self.ray_address is not None or self.num_workers != 1 or self.gpus_per_worker):
            raise CurateError("--ray-address, --num-workers and --gpus-per-worker need --engine ray")

    @property
    def is_ray(self) -> bool:
        return self.engine == "ray"

    @property
    def uses_gpu(self) -> bool:
        return self.is_ray and self.gpus_per_worker > 0


@dataclass
class TaskSpec:
    """The per-batch work, picklable: ``fn(state, spec, batch)`` -> one result per item, its model and settings.

    ``fn`` must be a module-level function: pickle (and Ray) send it by reference, so a worker imports only the
    module that defines it. ``state`` is the worker's dict for what ``fn`` keeps between batches (the model).

    >>> from curate.scoring import _token_losses_batch
    >>> TaskSpec(_token_losses_batch, "tiny", {"dtype": "float32"}).label
    'token_losses'
    """

    fn: Callable[[dict[str, Any], TaskSpec, list[Any]], Sequence[Any]]
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        qualname = getattr(self.fn, "__qualname__", None)
        if not callable(self.fn) or not isinstance(qualname, str) or "<" in qualname:
            # A lambda or a closure (``<lambda>``, ``<locals>``) has no importable name, so no worker can rebuild it.
            raise CurateError(f"TaskSpec: {self.fn!r} is not a module-level function")

    @property
    def label(self) -> str:
        """What the task computes, for messages: ``_features_batch`` -> ``features``."""
        return self.fn.__name__.strip("_").removesuffix("_batch")


class Worker:
    """Runs a ``TaskSpec`` batch after batch, building its model on first use and keeping it.

    ``run(items)`` returns one result per item; ``__call__`` is the Ray Data batch interface (columns ``keys``,
    JSON lists of row keys, and ``payload``, pickled item lists; one packed batch per row). A batch that raises
    comes back as one row keyed ``_FAILED`` carrying the message, which the driver raises as a ``CurateError``.

    >>> from curate.scoring import _features_batch
    >>> Worker(TaskSpec(_features_batch, "tiny")).state
    {}
    """

    def __init__(self, spec: TaskSpec, trust_remote_code: bool | None = None):
        if trust_remote_code is not None:
            # A Ray actor is another process: it gets the driver's choice here, not from its own environment.
            from curate.models import set_trust_remote_code

            set_trust_remote_code(trust_remote_code)
        self.spec = spec
        self.state: dict[str, Any] = {}

    def run(self, items: list[Any]) -> list[Any]:
        out = list(self.spec.fn(self.state, self.spec, items))
        if len(out) != len(items):
            raise CurateError(f"{self.spec.label}: batch function returned {len(out)} results for {len(items)}")
        return out

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        keys_out: list[str] = []
        payload_out: list[bytes] = []
        for keys_json, payload in zip(batch["keys"], batch["payload"], strict=True):
            keys = json.loads(keys_json)
            try:
                results = self.run(pickle.loads(payload))
            except Exception as e:  # sent back as a row: Ray would bury the message under its own traceback
                error = _one_line(e)
                keys_out, payload_out = [_FAILED], [pickle.dumps(error)]
                break
            keys_out.extend(keys)
            payload_out.extend(pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in results)
        return {"key": np.array(keys_out, dtype=object), "payload": np.array(payload_out, dtype=object)}


def _ray(engine: Engine) -> Any:
    try:
        import ray
    except ImportError:
        raise CurateError("--engine ray needs Ray: pip install 'curate[ray]' (or pip install 'ray[data]')") from None
    import logging

    if not ray.is_initialized():
        ray.init(
            address=engine.ray_address, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING
        )
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own progress per finished row
    # Ray Data logs each dataset's plan and timing at INFO and warns that its bars are off; failures still raise.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def run_batches(
    batches: Sequence[tuple[Sequence[str], list[Any]]],
    *,
    spec: TaskSpec | None = None,
    engine: Engine | None = None,
    fn: Callable[[list[Any]], Sequence[Any]] | None = None,
) -> Iterator[tuple[str, Any]]:
    """(row key, result) for every item of ``batches`` (pairs of row keys and items), as results finish.

    Local: ``fn`` (or a ``Worker(spec)``) over the batches in order. Ray: one actor pool of ``num_workers``
    Workers, each batch shipped whole (same packing, so same values), results in completion order.

    >>> list(run_batches([(["a", "b"], [1, 2])], fn=lambda xs: [x * 10 for x in xs]))
    [('a', 10), ('b', 20)]
    """
    engine = engine or Engine()
    if not engine.is_ray:
        if fn is None:
            if spec is None:
                raise CurateError("run_batches: needs fn or spec")
            fn = Worker(spec).run
        for keys, items in batches:
            out = fn(list(items))
            if len(out) != len(items):
                raise CurateError(f"batch function returned {len(out)} results for {len(items)}")
            yield from zip(keys, out, strict=True)
        return
    if spec is None:
        raise CurateError("--engine ray runs a TaskSpec, not an in-process function (no injected generator)")
    if not batches:
        return
    ray = _ray(engine)
    ds = ray.data.from_items(
        [
            {"keys": json.dumps(list(keys)), "payload": pickle.dumps(list(items), protocol=pickle.HIGHEST_PROTOCOL)}
            for keys, items in batches
        ],
        override_num_blocks=len(batches),  # one block per packed batch: workers pick batches up one at a time
    )
    from curate.models import trust_remote_code

    resources: dict[str, Any] = {"num_gpus": engine.gpus_per_worker} if engine.gpus_per_worker else {}
    mapped = ds.map_batches(
        Worker,
        # The trust switch travels beside the spec, not in it: it decides whether a model may load, not what
        # is computed, so it must stay out of the spec's settings (and every cache key).
        fn_constructor_args=(spec, trust_remote_code()),
        batch_size=1,
        batch_format="numpy",
        # An actor per batch at most: more would load the model for nothing.
        compute=ray.data.ActorPoolStrategy(size=min(engine.num_workers, len(batches))),
        num_cpus=1,
        **resources,
    )
    try:
        for row in mapped.iter_rows():
            if row["key"] == _FAILED:
                raise CurateError(f"{spec.label} on a Ray worker: {pickle.loads(row['payload'])}")
            yield str(row["key"]), pickle.loads(row["payload"])
    except ray.exceptions.RayError as e:  # a worker died (out of memory, a crashed CUDA kernel) or Ray itself failed
        raise CurateError(f"{spec.label} on Ray: {_one_line(e)}") from None


def _one_line(e: BaseException, limit: int = 500) -> str:
    """An exception as one line: the message's whitespace collapsed, its type named unless it is a CurateError."""
    text = " ".join(str(e).split())
    text = text if isinstance(e, CurateError) else f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
