"""Deduplication: keep one row of every group of duplicates, and name the survivor in each dropped row's reason.

What it computes, on the text of ``--fields`` (prompt and response: the whole trained conversation) at one of
three levels:
- ``exact``: the text in normal form (``curate.text.canonical``: NFKC, case-folded, whitespace collapsed),
  hashed. Equal hashes are duplicates (similarity 1).
- ``near``: MinHash LSH over word ``--shingle``-grams (default 5; a text with fewer words is one shingle),
  ``--num-perm`` permutations (default 128), bands and rows chosen by datasketch's rule (least weighted
  false-positive + false-negative area around ``--threshold``, default 0.8 Jaccard) with the weight on missed
  pairs (0.9: 14 bands of 9 rows at 0.8, where datasketch's default 0.5 gives 9 of 13). Candidate pairs from the
  bands are then checked by the exact Jaccard similarity of their shingle sets, so every dropped row is at least
  ``--threshold`` similar to its survivor, and a spurious candidate costs one Jaccard.
- ``semantic``: sentence embeddings (``--model``, default the embedded ``minilm``; any sentence-transformers
  folder works) of the text, L2-normalised; a row within cosine ``--threshold`` (default 0.9) of a survivor is a
  duplicate. Nearest survivors come from a faiss inner-product index. Embeddings are cached per row in the store
  like other per-row passes and run on Ray with ``--engine ray``.

Which row survives (``--keep``): rows are ranked by ``first`` (row order), ``longest`` (longest text first) or
``score:COLUMN`` (highest value of a numeric COLUMN first, missing values last), ties by row order. Going down
that ranking, a row is dropped when it is a duplicate of a row already kept, and gets reason
``duplicate_of:<survivor id>`` (the most similar such survivor) with the similarity as its decision score;
otherwise it is kept. So the result never holds two rows within the threshold of each other that the level can
see, and no dropped row is further than the threshold from its survivor (unlike union-find clusters, where a chain
of small steps can join two quite different rows). Rows with identical normal-form text are collapsed first, so
a thousand copies of one row cost one MinHash, one embedding and no pairs.

Scale: rows are read in record batches; the first pass keeps 8 bytes per row (the normal-form hash) plus, for
``near``, one 8-byte hash per band; the second pass reads back only the shingle sets of rows in a candidate pair.

References: MinHash (Broder 1997) and LSH banding as in datasketch ``MinHashLSH`` (the benchmark baseline);
semantic deduplication as in SemDeDup (Abbas et al. 2023) and semhash (greedy: a row is compared with the
survivors so far). NeMo Curator and datatrove offer the same three levels.

Departures and limits: the MinHash is our own, vectorised over a batch of rows (numpy; a permutation is
``(a * h + b) mod 2**64 >> 32`` of a 64-bit shingle hash, not datasketch's ``mod 2**61 - 1`` of a SHA-1), so
signatures differ from datasketch's while bands, rows and recall match (``benchmarks/dedup.py``). In one LSH
bucket a row is compared with at most the first 32 rows (in keep order) of that bucket. The semantic index is
exact (``IndexFlatIP``): fine up to a few hundred thousand rows.

    curate select sft --method dedup --level exact --name sft-dedup
    curate select sft --method dedup --level near --threshold 0.8 --keep longest --name sft-dedup
    curate select sft --method dedup --level semantic --threshold 0.92 --keep score:reward --name sft-dedup
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.embeddings import embed_texts
from curate.errors import CurateError
from curate.selectors.base import FilterSelector, Selection
from curate.store import Version
from curate.text import FIELDS, canonical, iter_batches, mix64, ngram_hashes, row_texts, words

__all__ = ["LEVELS", "DedupSelector", "embed_texts", "jaccard", "lsh_params", "minhash_signatures"]

LEVELS = ("exact", "near", "semantic")
DEFAULT_THRESHOLD = {"near": 0.8, "semantic": 0.9}
#: weight of missed pairs against spurious candidates when choosing LSH bands: candidates are verified exactly, so a
#: spurious one costs one Jaccard and a missed one a duplicate left in (datasketch's default weighs both 0.5)
FN_WEIGHT = 0.9
# Rows per record batch (near: a batch's shingles x 8 permutations of uint64 stay under ~10 MB).
_BATCH_ROWS = 1024
# Permutations evaluated at once: bounds the (permutations x shingles) matrix of one batch.
_PERM_CHUNK = 8
# In one LSH bucket a row is checked against at most this many rows ahead of it in keep order.
_MAX_BUCKET_PAIRS = 32
# Rows per faiss search block in semantic dedup (a block's own similarity matrix is block^2 floats).
_BLOCK = 1024
_U64 = np.uint64


# ---------------------------------------------------------------------------------------------- MinHash LSH


@functools.lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, fn_weight: float = FN_WEIGHT) -> tuple[int, int]:
    """(bands, rows per band) minimising ``(1 - fn_weight)`` x the false-positive area below ``threshold`` plus
    ``fn_weight`` x the false-negative area above it: datasketch ``MinHashLSH``'s rule and weights argument.

    >>> lsh_params(0.8, 128, 0.5), lsh_params(0.8, 128)
    ((9, 13), (14, 9))
    """
    s = np.linspace(0.0, 1.0, 4001)
    best, opt = np.inf, (1, 1)
    for b in range(1, num_perm + 1):
        for r in range(1, num_perm // b + 1):
            p = 1.0 - (1.0 - s**r) ** b
            fp = np.trapezoid(np.where(s <= threshold, p, 0.0), s)
            fn = np.trapezoid(np.where(s >= threshold, 1.0 - p, 0.0), s)
            error = (1.0 - fn_weight) * fp + fn_weight * fn
            if error < best:
                best, opt = error, (b, r)
    return opt


def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0x5EED)
    a = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True) | _U64(1)
    b = rng.integers(0, np.iinfo(np.uint64).max, size=num_perm, dtype=np.uint64, endpoint=True)
    return a, b


def shingles(texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """(shingle hashes, per-text offsets): the word k-grams of each text; a text of 1..k-1 words is one shingle.

    >>> h, off = shingles(["a b c d", "a b", ""], 3)
    >>> off.tolist()
    [0, 2, 3, 3]
    """
    w = words(texts)
    n = len(texts)
    grams, at = ngram_hashes(w.hashes, w.offsets, k)
    row = np.searchsorted(w.offsets, at, side="right") - 1
    lengths = np.diff(w.offsets)
    short = np.flatnonzero((lengths > 0) & (lengths < k))
    if len(short):
        extra = [
            ngram_hashes(w.hashes[w.offsets[i] : w.offsets[i + 1]], np.array([0, lengths[i]]), int(lengths[i]))[0]
            for i in short
        ]
        grams = np.concatenate([grams, *extra])
        row = np.concatenate([row, short])
        order = np.argsort(row, kind="stable")
        grams, row = grams[order], row[order]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=n), out=offsets[1:])
    return grams, offsets


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int) -> np.ndarray:
    """(texts, num_perm) MinHash signature of each text's set of 64-bit shingle hashes; an empty set gives all
    2**32 (larger than any value), so it matches nothing.

    >>> h, off = shingles(["the cat sat on the mat", "the cat sat on the mat", "dogs"], 2)
    >>> sig = minhash_signatures(h, off, 8)
    >>> bool((sig[0] == sig[1]).all()), bool((sig[0] == sig[2]).any())
    (True, False)
    """
    n = len(offsets) - 1
    sig = np.full((n, num_perm), 1 << 32, dtype=_U64)
    nonempty = np.flatnonzero(np.diff(offsets) > 0)
    if not len(nonempty):
        return sig
    a, b = _permutations(num_perm)
    starts = offsets[nonempty]
    buf = np.empty((min(_PERM_CHUNK, num_perm), len(hashes)), dtype=_U64)
    for p in range(0, num_perm, _PERM_CHUNK):
        q = min(p + _PERM_CHUNK, num_perm)
        # Multiply-add-shift: the top 32 bits of a * h + b (mod 2**64) are a near-universal hash of h. In place, in
        # one buffer: memory is permutations-at-once x shingles of the batch.
        v = buf[: q - p]
        np.multiply(a[p:q, None], hashes[None, :], out=v)
        v += b[p:q, None]
        v >>= _U64(32)
        sig[nonempty, p:q] = np.minimum.reduceat(v, starts, axis=1).T
    return sig


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(texts, bands) uint64: one hash of each band of ``rows`` signature values."""
    n = sig.shape[0]
    weights = mix64(np.arange(1, rows + 1, dtype=_U64))
    parts = sig[:, : bands * rows].reshape(n, bands, rows) * weights[None, None, :]
    return mix64(parts.sum(axis=2, dtype=_U64) ^ np.arange(bands, dtype=_U64)[None, :])


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted arrays of unique values.

    >>> jaccard(np.array([1, 2, 3]), np.array([2, 3, 4]))
    0.5
    """
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def _bucket_pairs(band: np.ndarray, live: np.ndarray) -> np.ndarray:
    """(earlier, later) pairs of positions (keep order) that share a band hash, deduplicated across bands.

    ``band`` is (positions, bands) in keep order; ``live`` marks positions that take part."""
    pos = np.flatnonzero(live)
    out = []
    for j in range(band.shape[1]):
        order = np.argsort(band[pos, j], kind="stable")  # stable: keep order inside a bucket
        h = band[pos[order], j]
        if len(h) < 2:
            continue
        new = np.ones(len(h), dtype=bool)
        new[1:] = h[1:] != h[:-1]
        group = np.cumsum(new) - 1
        first = np.flatnonzero(new)
        rank = np.arange(len(h)) - first[group]
        for d in range(min(_MAX_BUCKET_PAIRS, int(rank.max()))):
            later = np.flatnonzero(rank > d)
            out.append(np.stack([pos[order[first[group[later]] + d]], pos[order[later]]], axis=1))
    if not out:
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.concatenate(out).astype(np.int64), axis=0)


# ---------------------------------------------------------------------------------------------- the selector


class DedupSelector(FilterSelector):
    """Keep one row of every group of duplicates; each dropped row names its survivor.

    Args:
        level: exact (normal-form text), near (MinHash LSH on word shingles) or semantic (sentence embeddings).
        threshold: Similarity at which rows are duplicates: Jaccard for near (0.8), cosine for semantic (0.9).
        keep: Which row of a group survives: first, longest or score:COLUMN (highest value first).
        fields: Text compared: prompt and/or response.
        shingle: Words per shingle for --level near.
        num_perm: MinHash permutations for --level near.
        model: Sentence embedder for --level semantic (alias or folder); read only there.
        batch_tokens: Approximate tokens per encoder batch for --level semantic (default 8192).
    """

    name = "dedup"
    only_with = {"model": ("--level semantic", lambda s: s.level == "semantic")}

    def __init__(
        self,
        *,
        level: str = "exact",
        threshold: float | None = None,
        keep: str = "first",
        fields: tuple[str, ...] = FIELDS,
        shingle: int = 5,
        num_perm: int = 128,
        model: str = "minilm",
        engine: str = "local",
        ray_address: str | None = None,
        num_workers: int = 1,
        gpus_per_worker: float = 0.0,
        batch_tokens: int | None = None,
    ):
        self.level = level
        self.threshold = threshold
        self.keep = keep
        self.fields = fields
        self.shingle = shingle
        self.num_perm = num_perm
        self.model = model  # only read by --level semantic
        self.engine = engine
        self.ray_address = ray_address
        self.num_workers = num_workers
        self.gpus_per_worker = gpus_per_worker
        self.batch_tokens = batch_tokens  # semantic: approximate tokens per encoder batch (default 8192)

    # ------------------------------------------------------------------ parameters
    def _fields(self) -> tuple[str, ...]:
        fields = tuple(self.fields.split(",")) if isinstance(self.fields, str) else tuple(self.fields)
        if not fields or any(f not in FIELDS for f in fields):
            raise CurateError(f"--fields {','.join(map(str, fields))}: expected one or both of {','.join(FIELDS)}")
        return fields

    def _threshold(self) -> float | None:
        if self.level == "exact":
            return None
        return float(self.threshold) if self.threshold is not None else DEFAULT_THRESHOLD[self.level]

    def _check_params(self) -> None:
        if self.level not in LEVELS:
            raise CurateError(f"--level {self.level!r}: unknown level (available: {', '.join(LEVELS)})")
        t = self.threshold
        if self.level == "exact" and t is not None:
            raise CurateError("--threshold applies to --level near or semantic, not exact")
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < float(t) <= 1.0):
            raise CurateError(f"--threshold must be in (0, 1], got {t!r}")
        keep = self.keep
        if not isinstance(keep, str) or not (
            keep in ("first", "longest") or (keep.startswith("score:") and keep[len("score:") :])
        ):
            raise CurateError(f"--keep {keep!r}: expected first, longest or score:COLUMN")
        for flag, v, low in (("--shingle", self.shingle, 1), ("--num-perm", self.num_perm, 2)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
                raise CurateError(f"{flag} must be an integer >= {low}, got {v!r}")
        self._fields()

    def check_input(self, version: Version) -> None:
        self._check_params()
        self.check_text_columns(version)
        if self.keep.startswith("score:"):
            col = self.keep[len("score:") :]
            if col not in version.columns:
                raise CurateError(
                    f"{version.ref}: --keep {self.keep}: no column {col!r} "
                    f"(the version has {', '.join(version.columns)})"
                )

    def identity(self) -> dict[str, Any]:
        if self.level != "semantic":
            return {}
        from curate.models import resolve

        return {"embedder": resolve(self.model).identity}

    # ------------------------------------------------------------------ passes over the rows
    def _batches(self, version: Version, extra: Sequence[str] = ()) -> Iterator[tuple[int, pa.RecordBatch]]:
        cols = [c for c in ("messages", "prompt", "completion") if c in version.columns]
        cols += [c for c in extra if c not in cols]
        start = 0
        for batch in iter_batches(version, cols, _BATCH_ROWS) if len(version) else ():
            yield start, batch
            start += batch.num_rows

    def _priority(self, version: Version, lengths: np.ndarray) -> np.ndarray:
        """Row indices in keep order (the first survives)."""
        n = len(lengths)
        idx = np.arange(n)
        if self.keep == "first":
            return idx
        if self.keep == "longest":
            return np.lexsort((idx, -lengths))
        col = self.keep[len("score:") :]
        values = version.to_arrow(columns=[col]).column(col)
        if not (
            pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)
        ):
            raise CurateError(f"{version.ref}: --keep {self.keep}: column {col!r} is {values.type}, not numeric")
        v = values.to_numpy(zero_copy_only=False).astype(np.float64)
        missing = np.isnan(v)
        return np.lexsort((idx, -np.where(missing, 0.0, v), missing))

    def fit(self, version: Version) -> Self:
        self.check_input(version)
        self.version_ = version
        fields = self._fields()
        n = len(version)
        threshold = self._threshold()
        near = self.level == "near"
        keys = np.zeros(n, dtype=_U64)
        lengths = np.zeros(n, dtype=np.int64)
        bands, rows = lsh_params(threshold, int(self.num_perm)) if near else (0, 0)
        band = np.zeros((n, bands), dtype=_U64)
        nonempty = np.zeros(n, dtype=bool)
        texts: list[str] | None = [] if self.level == "semantic" else None
        for start, batch in self._batches(version):
            t = row_texts(batch, fields)
            end = start + len(t)
            keys[start:end] = np.fromiter(
                (int.from_bytes(hashlib.blake2b(canonical(x).encode(), digest_size=8).digest()) for x in t),
                dtype=_U64,
                count=len(t),
            )
            lengths[start:end] = np.fromiter(map(len, t), dtype=np.int64, count=len(t))
            if near:
                h, off = shingles(t, int(self.shingle))
                band[start:end] = band_hashes(minhash_signatures(h, off, int(self.num_perm)), bands, rows)
                nonempty[start:end] = np.diff(off) > 0
            if texts is not None:
                texts.extend(t)
        ids = (
            [str(x) for x in version.to_arrow(columns=["id"]).column("id").to_pylist()]
            if "id" in version.columns
            else [str(i) for i in range(n)]
        )
        order = self._priority(version, lengths)  # order[p] = row at keep position p
        # Identical normal-form text: the first in keep order represents the rest.
        _, first_pos, inverse = np.unique(keys[order], return_index=True, return_inverse=True)
        rep_pos = first_pos[inverse]  # keep position of each position's representative
        is_rep = rep_pos == np.arange(n)
        dup_of = np.full(n, -1, dtype=np.int64)  # by keep position: the survivor's keep position, or -1
        sim = np.zeros(n, dtype=np.float64)
        if near:
            self._near(version, order, is_rep, nonempty[order], band[order], threshold, dup_of, sim)
        elif self.level == "semantic":
            assert texts is not None
            self._semantic(version, [texts[i] for i in order[is_rep]], np.flatnonzero(is_rep), threshold, dup_of, sim)
        # Copies follow their representative: to it if it survives, else to its survivor, at its similarity.
        copies = np.flatnonzero(~is_rep)
        rep_dup = dup_of[rep_pos[copies]]
        dup_of[copies] = np.where(rep_dup >= 0, rep_dup, rep_pos[copies])
        sim[copies] = np.where(rep_dup >= 0, sim[rep_pos[copies]], 1.0)

        self.scores_ = np.zeros(n, dtype=np.float64)
        self.reasons_ = [""] * n
        self.duplicate_of_: list[str | None] = [None] * n
        for p in np.flatnonzero(dup_of >= 0):
            row, survivor = int(order[p]), int(order[dup_of[p]])
            self.scores_[row] = sim[p]
            self.reasons_[row] = f"duplicate_of:{ids[survivor]}"
            self.duplicate_of_[row] = ids[survivor]
        self.groups_ = len(np.unique(dup_of[dup_of >= 0]))
        self.lsh_ = {"bands": bands, "rows": rows} if near else None
        return self

    def _near(self, version, order, is_rep, nonempty, band, threshold, dup_of, sim) -> None:
        pairs = _bucket_pairs(band, is_rep & nonempty)
        if not len(pairs):
            return
        # Second pass: the shingle sets of the rows in a candidate pair only, for their exact Jaccard.
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        need = np.zeros(len(order), dtype=bool)
        need[order[np.unique(pairs)]] = True
        sets: dict[int, np.ndarray] = {}
        for start, batch in self._batches(version):
            rows = np.flatnonzero(need[start : start + batch.num_rows])
            if not len(rows):
                continue
            h, off = shingles(row_texts(batch.take(pa.array(rows)), self._fields()), int(self.shingle))
            for j, r in enumerate(rows):
                sets[int(position[start + r])] = np.unique(h[off[j] : off[j + 1]])
        later: dict[int, list[tuple[int, float]]] = {}
        for a, b in pairs.tolist():
            j = jaccard(sets[a], sets[b])
            if j >= threshold:
                later.setdefault(b, []).append((a, j))
        for b in sorted(later):  # keep order: every earlier row's fate is settled
            best = max(((j, -a) for a, j in later[b] if dup_of[a] < 0), default=None)
            if best is not None:
                dup_of[b], sim[b] = -best[1], best[0]

    def _semantic(self, version, texts, positions, threshold, dup_of, sim) -> None:
        import faiss

        stats: dict[str, int] = {}
        x = embed_texts(
            texts,
            model=self.model,
            store=version.store,
            stats=stats,
            batch_tokens=self.batch_tokens,
            **self.engine_kwargs(),
        )
        self.embed_stats_ = stats
        if not len(x):
            return
        index = faiss.IndexFlatIP(x.shape[1])
        kept: list[int] = []  # positions (into x) of survivors in the index
        for s in range(0, len(x), _BLOCK):
            block = np.ascontiguousarray(x[s : s + _BLOCK])
            if index.ntotal:
                d, i = index.search(block, 1)
                prior_sim, prior = d[:, 0].astype(np.float64), np.asarray(kept)[i[:, 0]]
            else:
                prior_sim, prior = np.full(len(block), -np.inf), np.zeros(len(block), np.int64)
            inner = block @ block.T
            new: list[int] = []
            for t in range(len(block)):
                best_sim, best = float(prior_sim[t]), int(prior[t])
                if new:
                    k = int(np.argmax(inner[t, new]))
                    if inner[t, new[k]] > best_sim:  # ties go to the survivor ahead in keep order
                        best_sim, best = float(inner[t, new[k]]), s + new[k]
                if best_sim >= threshold:
                    dup_of[positions[s + t]], sim[positions[s + t]] = positions[best], min(best_sim, 1.0)
                else:
                    new.append(t)
            if new:
                index.add(np.ascontiguousarray(block[new]))
                kept += [s + t for t in new]

    # ------------------------------------------------------------------ outputs
    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Base decisions (score = similarity to the survivor) plus ``duplicate_of`` (null for kept rows)."""
        out = super().decisions(table, selection)
        return out.append_column("duplicate_of", pa.array(self.duplicate_of_, type=pa.string()))

    def stats(self, selection: Selection) -> dict[str, Any]:
        base = super().stats(selection)
        dropped = base["dropped"]
        out = {
            **base,
            "reasons": {"duplicate_of": dropped} if dropped else {},
            "level": self.level,
            "threshold": self._threshold(),
            "groups": self.groups_,
        }
        if self.lsh_ is not None:
            out["lsh"] = self.lsh_
        if getattr(self, "embed_stats_", None):
            out["embeddings"] = self.embed_stats_
        return out
