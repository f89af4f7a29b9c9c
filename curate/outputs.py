"""Paths curate writes outside the store: the checks every ``--out`` passes, and atomic writes that clean up.

``check_out`` runs before an export, a training run, a report or a recipe step writes anything. It refuses an
output inside the store (or the store root itself): the store is changed only by commits, and a file written there
by hand would overwrite data a manifest hashes, or add a folder ``verify`` cannot account for. Paths are compared
after resolving symlinks, so a link that points into the store is caught too. A store on object storage cannot
hold a local path, so it is not checked. An output that replaces its whole folder (``export --format hf``) is
also refused when that folder holds the store. A path under an existing file (``--out notes.txt/sub``) gets one
line instead of the ``mkdir`` traceback. The one exception is curate's own model cache: token-clean trains its
reference model into ``<store>/cache`` inside ``writing_store_cache()``, which no flag can turn on.

``atomic_write`` writes to ``.<name>.curate-tmp-<pid>-<hex>`` in the target's own folder (same filesystem, so the
rename is atomic) and renames it into place; an exception removes the temporary. A process killed mid-write cannot
clean up, so ``sweep_temps`` (run by the next writer to that folder) removes temporaries whose process is gone.
Only names of that exact pattern are touched, and never one of a live process (a concurrent writer).

    curate export toy --format verl --out exports/verl     # refused if exports/verl were inside the store
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from curate.errors import CurateError

TMP_MARK = ".curate-tmp-"
_TMP = re.compile(r"^\..+\.curate-tmp-(?P<pid>\d+)-[0-9a-f]{12}$")
_CACHE_WRITER: ContextVar[bool] = ContextVar("curate_cache_writer", default=False)


@contextmanager
def writing_store_cache() -> Iterator[None]:
    """Let curate's own code train into ``<store>/cache`` (token-clean's reference model); a user's --out never.

    >>> with writing_store_cache():                                        # doctest: +SKIP
    ...     curate.train.sft("warmup", out=".curate/cache/token-clean-models/.k.partial")
    """
    token = _CACHE_WRITER.set(True)
    try:
        yield
    finally:
        _CACHE_WRITER.reset(token)


def store_root(store: Any = None) -> Path | None:
    """The resolved local root of ``store`` (a ``Store``, a path or URL, or None for the current one); None when
    the store is remote."""
    from curate.store import get_store

    s = get_store(store)
    return None if s.remote else Path(s.root).expanduser().resolve()


def check_out(out: str | Path, store: Any = None, *, replaces: bool = False, flag: str = "--out") -> Path:
    """Refuse an output path inside the store (or its root; with ``replaces``, also one holding it) or under an
    existing file; return the path, ``~`` expanded.

    >>> check_out(".curate/datasets", Store(".curate"))   # doctest: +SKIP
    CurateError: --out .curate/datasets: inside the store /home/me/.curate; ...
    """
    path = Path(out).expanduser()
    for parent in path.parents:
        if parent.is_dir():
            break
        if parent.exists() or parent.is_symlink():
            raise CurateError(f"{flag} {out}: {parent} exists and is not a folder, so nothing can be written under it")
    root = store_root(store)
    if root is None:
        return path
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise CurateError(f"{flag} {out}: cannot resolve the path ({e})") from None
    if _CACHE_WRITER.get() and root / "cache" in real.parents:
        return path
    if real == root or root in real.parents:
        raise CurateError(
            f"{flag} {out}: inside the store {root}, which only commits may change; choose a path outside it"
        )
    if replaces and real in root.parents:
        raise CurateError(
            f"{flag} {out}: holds the store {root}, and this output replaces its whole folder; "
            "choose a path outside it"
        )
    return path


def temp_path(path: Path) -> Path:
    """A fresh temporary name beside ``path`` that ``sweep_temps`` recognises as ours."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:12]}")


def remove(path: Path) -> None:
    """Remove a file or a folder if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary beside ``path``, then rename it into place; on any error remove it.

    >>> atomic_write(Path("out/a.txt"), lambda tmp: tmp.write_text("hi"))   # doctest: +SKIP
    """
    # Made on first write, so an output refused by its checks leaves no empty folder behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        remove(tmp)
        raise CurateError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        remove(tmp)
        raise
    return path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":
        return True  # os.kill(pid, 0) terminates the process on Windows: never sweep what cannot be checked
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def sweep_temps(folder: Path) -> list[Path]:
    """Remove the temporaries that killed writers left in ``folder``; returns what was removed."""
    if not folder.is_dir():
        return []
    gone = []
    for entry in folder.iterdir():
        m = _TMP.match(entry.name)
        if m and not _alive(int(m.group("pid"))):
            remove(entry)
            gone.append(entry)
    return gone
