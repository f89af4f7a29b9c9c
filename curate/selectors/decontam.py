"""Benchmark decontamination: drop every row that overlaps an item of a benchmark you will report on.

What it computes: each row's text (``--fields``: prompt and/or response) and every benchmark item's text in the
same fields are split into words after one normalisation (``curate.text``: NFKC, case-folded, runs of letters
and digits). A row is contaminated by an item when
- they share a run of ``--ngram`` words (default 13; 8 is what open-r1 uses), or
- ``--lcs-threshold`` r is set (default 0.5) and their longest common run of words, with every number masked,
  covers at least r of one of the item's fields (the *LCS ratio*). This catches an item copied with its numbers
  changed or a clause reworded. It is only computed against items that share a masked 8-word run with the row
  (a run found in more than 20 item fields is template text and does not make a candidate), first estimated as
  the longest chain of consecutive shared 8-word runs, then computed exactly (a binary search on the run length
  over hashed runs) for the pairs the estimate passes. The common run must also hold 6 content words (two
  letters or more, not numbers): a stretch of numbers and one-letter variables is shared by any two algebra
  solutions.
A dropped row gets reason ``contaminated:<bench>:<item id>`` (the item with the highest LCS ratio), the ratio as
its score, and the overlapping text (the row's words of the longest common run) in decisions.parquet. The
manifest's stats list every item that leaked and how many rows it touched (``--report`` prints that list).

Speed: words and n-grams are 64-bit hashes computed in numpy over a whole batch of rows, cut straight out of
the Arrow buffers (``curate.text.batch_words``); matching is a bit-table filter and then a sorted search of the
row's n-gram hashes in the benchmark's. Rows are read in record batches of 512, so memory holds one batch and
the benchmark index (built once per process). On GSM8K train against the GSM8K test split: 60-85k rows/s on
one core, 7-9x a plain Python set-of-n-grams loop (``benchmarks/dedup.py``).

References: the open-r1 decontamination script (word 8-grams of the problem against AIME/MATH-500/GPQA/LCB);
AllenAI decon (n-gram matching, streamed training data against an index of the evals); the 10-gram retrieval
plus ``difflib`` matched-length ratio > 0.5 of Phi-1 and Cosmopedia, which the LCS ratio follows.

Departures: punctuation is not part of a word (``"$18."`` and ``18`` match); numbers are masked only for the
LCS ratio, never for the n-gram rule; the ratio uses the longest common run (one block), not difflib's sum of
matching blocks, so a row must contain one long stretch of the item; an item field shorter than ``--ngram``
words can only be caught by the LCS rule (8 words or more).

Benchmarks (``--against``, comma-separated): a built-in name (``gsm8k``: the GSM8K test split, shipped in
``curate/benchmarks_data``), a file (any format ``curate import`` reads), or a store ref (``name@v2``; a bare
name is a store dataset when no built-in has that name). Files and built-ins enter the version id by content
digest, store refs as parents.

    curate select sft --method decontam --against gsm8k --report --name sft-clean
    curate select sft --method decontam --against gsm8k,data/math500.jsonl --ngram 8 --fields prompt --name sft-clean
"""

from __future__ import annotations

import gzip
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import pyarrow as pa

from curate.errors import CurateError
from curate.selectors.base import FilterSelector, Selection
from curate.store import Store, Version, sha256_file
from curate.text import FIELDS, Words, batch_words, iter_batches, ngram_hashes, row_texts, words

__all__ = ["BUILTINS", "DecontamSelector", "longest_common_run"]

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "benchmarks_data"
#: built-in benchmark name -> file in ``curate/benchmarks_data`` (see its README for sources and licences)
BUILTINS = {"gsm8k": "gsm8k-test.jsonl.gz"}
#: masked words a row must share in a run with an item field before its LCS ratio is computed
LCS_PROBE = 8
#: content words (two letters or more, not numbers) the common run of the LCS rule must hold: a run of numbers and
#: one-letter variables ("x = # x # = #") is shared by any two algebra solutions
LCS_MIN_WORDS = 6
# A masked 8-word run found in more item fields than this is template text ("how many # does she have left"):
# it would make every row a candidate and decides nothing.
_MAX_PROBE_FIELDS = 20
# Rows per record batch: small enough that one batch's arrays stay in cache (512 ran faster than 4096 here).
_BATCH_ROWS = 512
# Benchmark indexes kept in this process (a few MB each): the second select against the same benchmark, in a
# pipeline or a notebook, skips reading and hashing it again.
_INDEXES: OrderedDict[tuple, _Index] = OrderedDict()
_MAX_INDEXES = 4
# The hash every all-digit word becomes for the LCS rule (any fixed value unlikely to be a word's hash).
_NUMBER = np.uint64(0x6E756D6265720001)


@dataclass
class _Bench:
    """One resolved ``--against`` entry."""

    given: str
    label: str  # the name in reasons: built-in name, dataset name or file stem
    kind: str  # builtin | file | ref
    digest: str | None = None
    ref: str | None = None


@dataclass
class _Index:
    """The benchmark side, built once: n-gram hashes and masked tokens of every item field (a *segment*)."""

    seg_bench: np.ndarray  # segment -> index into the benchmarks
    seg_item: np.ndarray  # segment -> index into item_ids
    item_ids: list[str]
    item_bench: list[int]
    gram: _HashIndex  # n-gram hash -> entries of gram_seg
    gram_seg: np.ndarray
    tokens: np.ndarray  # masked tokens of all segments, flat
    tok_off: np.ndarray
    probe: _HashIndex  # masked probe hash -> entries of probe_seg / probe_pos (template probes left out)
    probe_seg: np.ndarray
    probe_pos: np.ndarray


def _segment_of(positions: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, positions, side="right") - 1


def _expand(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which range, index) for every index in the ranges ``lo[i]:hi[i]``."""
    counts = hi - lo
    which = np.repeat(np.arange(len(lo)), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return which, lo[which] + within


def _unique_rows(a: np.ndarray) -> np.ndarray:
    """``np.unique(a, axis=0)`` for a non-negative int64 matrix, through one packed int64 key per row when the
    columns fit (np.unique on rows sorts a structured view, several times slower)."""
    if not len(a):
        return a
    widths = [int(c).bit_length() for c in a.max(axis=0)]
    if sum(widths) > 63:
        return np.unique(a, axis=0)
    key = np.zeros(len(a), dtype=np.int64)
    for j, w in enumerate(widths):
        key = (key << w) | a[:, j]
    _, first = np.unique(key, return_index=True)
    return a[first]


def masked_tokens(w: Words) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, per-text offsets, word index of each token): every all-digit word becomes one number token and a
    run of number words one token, so ``48 / 2 = 24`` and ``50 / 3 = 17`` read the same."""
    n = len(w.hashes)
    first = np.zeros(n, dtype=bool)
    first[w.offsets[:-1][w.offsets[:-1] < n]] = True
    prev_number = np.concatenate([[False], w.numeric[:-1]]) & ~first
    idx = np.flatnonzero(~(w.numeric & prev_number))
    tokens = w.hashes[idx].copy()
    tokens[w.numeric[idx]] = _NUMBER
    return tokens, np.searchsorted(idx, w.offsets).astype(np.int64), idx


def longest_common_run(x: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
    """(length, end in x, end in y) of the longest run of equal consecutive elements (uint64) of ``x`` and ``y``.

    A binary search on the length k: some k-run is shared iff a k-gram hash of ``x`` is among ``y``'s (a common
    run of k contains one of every shorter length). About log2(len) vectorised rounds instead of a
    len(x) x len(y) dynamic programme in Python; the first such run in ``x`` wins.

    >>> longest_common_run(np.array([1, 2, 3, 4], np.uint64), np.array([9, 2, 3, 4, 8], np.uint64))
    (3, 4, 4)
    """
    x, y = np.asarray(x, dtype=np.uint64), np.asarray(y, dtype=np.uint64)
    px, py = _prefix(x), _prefix(y)
    lo, hi, end_x, end_y = 0, min(len(x), len(y)), 0, 0
    while lo < hi:
        k = (lo + hi + 1) // 2
        gy = _grams(py, len(y), k)
        # Python sets: on ~100 grams they beat np.isin, which sorts.
        seen = set(gy)
        i = next((i for i, g in enumerate(_grams(px, len(x), k)) if g in seen), -1)
        if i >= 0:
            lo, end_x, end_y = k, i + k, gy.index(_grams(px, len(x), k)[i]) + k
        else:
            hi = k - 1
    return lo, end_x, end_y


def _prefix(seq: np.ndarray) -> np.ndarray:
    q = _POW[: len(seq)] if len(seq) <= len(_POW) else _powers(len(seq))[0]
    out = np.zeros(len(seq) + 1, dtype=np.uint64)
    np.cumsum(seq * q, out=out[1:])
    return out


def _grams(prefix: np.ndarray, n: int, k: int) -> list[int]:
    """Position-independent hashes of the k-runs of a sequence, from its ``_prefix`` (same as ngram_hashes up to
    the final mixing, which a membership test does not need)."""
    inv = _IPOW[: n - k + 1] if n - k + 1 <= len(_IPOW) else _powers(n - k + 1)[1]
    return ((prefix[k:] - prefix[: n - k + 1]) * inv).tolist()


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    from curate.text import _QPOWERS

    return _QPOWERS.get(n)


_POW, _IPOW = _powers(4096)


@dataclass
class _HashIndex:
    """Sorted unique 64-bit keys, the range of entries each one owns, and a bit table in front of them."""

    keys: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    table: np.ndarray  # one bit per 2**-bits slice of the hash space
    bits: int

    @classmethod
    def build(cls, hashes: np.ndarray, max_entries: int | None = None) -> _HashIndex:
        """Over ``hashes`` sorted: entry i of the index is position i of the sorted array. Keys with more than
        ``max_entries`` entries are left out."""
        keys, lo, counts = np.unique(hashes, return_index=True, return_counts=True)
        if max_entries is not None:
            keep = counts <= max_entries
            keys, lo, counts = keys[keep], lo[keep], counts[keep]
        # ~16 slices per key (1 MB for GSM8K, cache-resident): most row n-grams miss the benchmark and stop at
        # one bit; only the ~6% that land on a set bit pay for the binary search.
        bits = int(np.clip(np.ceil(np.log2(max(len(keys), 1))) + 4, 16, 32))
        table = np.zeros(1 << bits, dtype=bool)
        table[keys >> np.uint64(64 - bits)] = True
        return cls(keys, lo, lo + counts, np.packbits(table, bitorder="little"), bits)

    def lookup(self, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query index, lo, hi) for every query that is a key."""
        slot = query >> np.uint64(64 - self.bits)
        maybe = np.flatnonzero((self.table[slot >> np.uint64(3)] >> (slot & np.uint64(7)).astype(np.uint8)) & 1)
        if not len(maybe) or not len(self.keys):
            empty = np.zeros(0, np.int64)
            return empty, empty, empty
        # Sorted queries: numpy's binary search then narrows from the previous answer (3x faster here).
        maybe = maybe[np.argsort(query[maybe], kind="stable")]
        k = np.minimum(np.searchsorted(self.keys, query[maybe]), len(self.keys) - 1)
        ok = self.keys[k] == query[maybe]
        return maybe[ok], self.lo[k[ok]], self.hi[k[ok]]


class DecontamSelector(FilterSelector):
    """Drop every row that overlaps an item of a benchmark (shared word n-gram, or a long common run of words).

    Args:
        against: Benchmarks, comma-separated: a built-in name (gsm8k), a data file or a store ref.
        ngram: Words of the shared run that makes a row contaminated.
        fields: Text compared with the benchmark items: prompt and/or response.
        lcs_threshold: Also drop rows whose longest common run (numbers masked) covers this share of an item.
        report: Print the leaked items after the summary (they are in the stats either way).
    """

    name = "decontam"

    def __init__(
        self,
        *,
        against: tuple[str, ...] = (),
        ngram: int = 13,
        fields: tuple[str, ...] = FIELDS,
        lcs_threshold: float | None = 0.5,
        report: bool = False,
    ):
        self.against = against
        self.ngram = ngram
        self.fields = fields
        self.lcs_threshold = lcs_threshold
        self.report = report  # only prints: the leak list is in the stats either way

    # ------------------------------------------------------------------ parameters and benchmarks
    def get_params(self) -> dict[str, Any]:
        # --report only prints what the stats hold anyway: the same data, so the same version id.
        return {k: v for k, v in super().get_params().items() if k != "report"}

    def _names(self) -> list[str]:
        items = self.against.split(",") if isinstance(self.against, str) else list(self.against)
        names = [str(a).strip() for a in items if str(a).strip()]
        if not names:
            raise CurateError(f"--method decontam needs --against BENCH[,BENCH...] (built-in: {', '.join(BUILTINS)})")
        return names

    def _fields(self) -> tuple[str, ...]:
        fields = tuple(self.fields.split(",")) if isinstance(self.fields, str) else tuple(self.fields)
        if not fields or any(f not in FIELDS for f in fields):
            raise CurateError(f"--fields {','.join(map(str, fields))}: expected one or both of {','.join(FIELDS)}")
        return fields

    def _check_params(self) -> None:
        n = self.ngram
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= 256:
            raise CurateError(f"--ngram must be an integer in [1, 256], got {n!r}")
        t = self.lcs_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not 0.0 < float(t) <= 1.0):
            raise CurateError(f"--lcs-threshold must be in (0, 1] (or none to turn the LCS rule off), got {t!r}")
        self._fields()

    def _resolve(self, store: Store | None) -> list[_Bench]:
        if getattr(self, "benches_", None) is not None:
            return self.benches_
        if store is None:
            from curate.store import get_store

            store = get_store()
        out = []
        for given in self._names():
            if "@" not in given and given in BUILTINS:
                path = BUILTIN_DIR / BUILTINS[given]
                out.append(_Bench(given, given, "builtin", digest=sha256_file(path)))
            elif Path(given).expanduser().is_file():
                path = Path(given).expanduser()
                out.append(_Bench(given, path.name.split(".")[0], "file", digest=sha256_file(path)))
            elif "@" in given or given in store.datasets():
                v = store.load(given)
                out.append(_Bench(given, v.name, "ref", ref=given))
            else:
                raise CurateError(
                    f"--against {given}: not a built-in benchmark ({', '.join(BUILTINS)}), not a file, "
                    "and not a dataset in the store"
                )
        self.benches_ = out
        return out

    def check_input(self, version: Version) -> None:
        self._check_params()
        self.check_text_columns(version)
        self._resolve(version.store)

    def identity(self) -> dict[str, Any]:
        benches = self._resolve(None)
        return {"benchmarks": [{"name": b.given, "sha256": b.digest} for b in benches if b.kind != "ref"]}

    def extra_parents(self) -> list[str]:
        return [b.ref for b in self._resolve(None) if b.kind == "ref" and b.ref is not None]

    def _load(self, bench: _Bench, store: Store) -> tuple[pa.Table, str]:
        from curate.io import read_source
        from curate.records import normalise

        if bench.kind == "ref":
            v = store.load(bench.ref)
            cols = [c for c in ("id", "messages", "prompt", "completion") if c in v.columns]
            table, where = v.to_arrow(columns=cols), v.ref
        else:
            if bench.kind == "builtin":
                path = BUILTIN_DIR / BUILTINS[bench.given]
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    rows = [json.loads(line) for line in f if line.strip()]
            else:
                path = Path(bench.given).expanduser()
                rows = read_source(str(path)).rows
            table, _ = normalise(rows, source=str(path))
            where = str(path)
        if table.num_rows == 0:
            raise CurateError(f"--against {bench.given}: empty benchmark ({where} has no rows)")
        return table, where

    def _index(self, store: Store) -> _Index:
        """The benchmark index, built once per process for the same benchmark contents, fields and n."""
        content = tuple(b.digest if b.kind != "ref" else store.load(b.ref).id for b in self.benches_)
        key = (content, self._fields(), int(self.ngram))
        if key in _INDEXES:
            _INDEXES.move_to_end(key)
            return _INDEXES[key]
        ix = self._build_index(store)
        _INDEXES[key] = ix
        while len(_INDEXES) > _MAX_INDEXES:
            _INDEXES.popitem(last=False)
        return ix

    def _build_index(self, store: Store) -> _Index:
        fields = self._fields()
        seg_texts: list[str] = []
        seg_bench: list[int] = []
        seg_item: list[int] = []
        item_ids: list[str] = []
        item_bench: list[int] = []
        for b, bench in enumerate(self.benches_):
            table, where = self._load(bench, store)
            if not {"messages", "prompt", "completion"} & set(table.column_names):
                raise CurateError(f"--against {bench.given}: {where} has no prompt, messages or completion column")
            ids = [str(i) for i in table.column("id").to_pylist()]
            texts = [t for f in fields for t in row_texts(table, [f])]
            has_words = np.diff(words(texts).offsets) > 0
            if not has_words.any():
                raise CurateError(
                    f"--against {bench.given}: empty benchmark (no words in --fields {','.join(fields)})"
                )
            for k in np.flatnonzero(has_words).tolist():
                seg_texts.append(texts[k])
                seg_bench.append(b)
                seg_item.append(len(item_ids) + k % len(ids))
            item_ids += ids
            item_bench += [b] * len(ids)
        w = words(seg_texts)
        gram, at = ngram_hashes(w.hashes, w.offsets, int(self.ngram))
        order = np.argsort(gram, kind="stable")
        tokens, tok_off, _ = masked_tokens(w)
        probe = min(LCS_PROBE, int(self.ngram))
        pg, pat = ngram_hashes(tokens, tok_off, probe)
        pseg = _segment_of(pat, tok_off)
        porder = np.argsort(pg, kind="stable")
        return _Index(
            seg_bench=np.asarray(seg_bench, dtype=np.int64),
            seg_item=np.asarray(seg_item, dtype=np.int64),
            item_ids=item_ids,
            item_bench=item_bench,
            gram=_HashIndex.build(gram[order]),
            gram_seg=_segment_of(at, w.offsets)[order],
            tokens=tokens,
            tok_off=tok_off,
            probe=_HashIndex.build(pg[porder], max_entries=_MAX_PROBE_FIELDS),
            probe_seg=pseg[porder],
            probe_pos=(pat - tok_off[pseg])[porder],
        )

    # ------------------------------------------------------------------ scan
    def _candidates(self, ix: _Index, w: Words, masked: tuple | None) -> tuple[np.ndarray, ...]:
        """(row, segment, by n-gram) pairs worth an exact look, for one batch (``masked``: for the LCS rule)."""
        gram, at = ngram_hashes(w.hashes, w.offsets, int(self.ngram))
        hit, lo, hi = ix.gram.lookup(gram)
        which, entry = _expand(lo, hi)
        rows = [_segment_of(at[hit], w.offsets)[which]]
        segs = [ix.gram_seg[entry]]
        if masked is not None and len(ix.probe.keys):
            tokens, tok_off, _ = masked
            probe = min(LCS_PROBE, int(self.ngram))
            pg, pat = ngram_hashes(tokens, tok_off, probe)
            ok, lo, hi = ix.probe.lookup(pg)
            which, entry = _expand(lo, hi)
            trip = _unique_rows(
                np.stack([_segment_of(pat[ok], tok_off)[which], ix.probe_seg[entry], ix.probe_pos[entry]], axis=1)
            )
            if len(trip):
                # A chain of consecutive item positions whose runs all occur in the row estimates a common run of
                # chain + probe - 1 tokens; the exact run is computed below for the pairs that pass.
                new = np.ones(len(trip), dtype=bool)
                new[1:] = (np.diff(trip[:, 0]) != 0) | (np.diff(trip[:, 1]) != 0) | (np.diff(trip[:, 2]) != 1)
                chain = np.diff(np.append(np.flatnonzero(new), len(trip)))
                heads = trip[new]
                seg_len = np.diff(ix.tok_off)[heads[:, 1]]
                passes = (chain + probe - 1) >= float(self.lcs_threshold) * seg_len
                rows.append(heads[passes, 0])
                segs.append(heads[passes, 1])
        n_gram = len(rows[0])
        by_gram = np.zeros(sum(len(r) for r in rows), dtype=bool)
        by_gram[:n_gram] = True
        pairs = np.stack([np.concatenate(rows), np.concatenate(segs), ~by_gram], axis=1).astype(np.int64)
        if not len(pairs):
            return pairs[:, 0], pairs[:, 1], pairs[:, 2] == 0
        # One entry per (row, segment); an n-gram hit (flag 0) sorts first and wins.
        pairs = _unique_rows(pairs)
        first = np.ones(len(pairs), dtype=bool)
        first[1:] = (np.diff(pairs[:, 0]) != 0) | (np.diff(pairs[:, 1]) != 0)
        pairs = pairs[first]
        return pairs[:, 0], pairs[:, 1], pairs[:, 2] == 0

    def _scan(self, ix: _Index, w: Words) -> dict[int, tuple[float, int, str, set[int]]]:
        """{row in batch: (ratio, best item, overlapping text, every item it leaks)} for contaminated rows."""
        threshold = self.lcs_threshold
        masked = masked_tokens(w) if threshold is not None else None
        rows, segs, by_gram = self._candidates(ix, w, masked)
        if not len(rows):
            return {}
        tokens, tok_off, tok_word = masked if masked is not None else masked_tokens(w)
        # Words that carry content: not numbers, not one letter (the x and y of every algebra solution).
        content = np.cumsum(np.concatenate([[0], (~w.numeric[tok_word]) & (w.end - w.start >= 2)[tok_word]]))
        found: dict[int, tuple[float, int, str, set[int]]] = {}
        for r, s, g in zip(rows.tolist(), segs.tolist(), by_gram.tolist(), strict=True):
            x = tokens[tok_off[r] : tok_off[r + 1]]
            y = ix.tokens[ix.tok_off[s] : ix.tok_off[s + 1]]
            run, end, _ = longest_common_run(x, y)
            ratio = run / max(len(y), 1)
            at = int(tok_off[r]) + end
            if not g and (
                threshold is None or ratio < float(threshold) or content[at] - content[at - run] < LCS_MIN_WORDS
            ):
                continue
            item = int(ix.seg_item[s])
            a = int(tok_word[tok_off[r] + end - run]) if run else int(w.offsets[r])
            b = int(tok_word[tok_off[r] + end]) if tok_off[r] + end < tok_off[r + 1] else int(w.offsets[r + 1])
            best = found.get(r)
            if best is None:
                found[r] = (ratio, item, w.text(a, b), {item})
            else:
                best[3].add(item)
                if ratio > best[0]:
                    found[r] = (ratio, item, w.text(a, b), best[3])
        return found

    # ------------------------------------------------------------------ fit / select
    def fit(self, version: Version) -> Self:
        self.check_input(version)
        self.version_ = version
        ix = self._index(version.store)
        fields = self._fields()
        n = len(version)
        self.scores_ = np.zeros(n, dtype=np.float64)
        self.reasons_ = [""] * n
        self.items_: list[int | None] = [None] * n
        self.overlap_: list[str | None] = [None] * n
        leaks: dict[int, int] = {}
        cols = [c for c in ("messages", "prompt", "completion") if c in version.columns]
        start = 0
        for batch in iter_batches(version, cols, _BATCH_ROWS) if n else ():
            for r, (ratio, item, text, items) in self._scan(ix, batch_words(batch, fields)).items():
                i = start + r
                self.scores_[i] = ratio
                self.items_[i] = item
                self.overlap_[i] = text
                self.reasons_[i] = f"contaminated:{self.benches_[ix.item_bench[item]].label}:{ix.item_ids[item]}"
                for it in items:
                    leaks[it] = leaks.get(it, 0) + 1
            start += batch.num_rows
        self.index_ = ix
        self.leaks_ = [
            {"bench": self.benches_[ix.item_bench[it]].label, "item": ix.item_ids[it], "rows": c}
            for it, c in sorted(leaks.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
        return self

    def decisions(self, table: pa.Table, selection: Selection) -> pa.Table:
        """Base decisions plus ``bench``, ``bench_item`` and ``overlap`` (null for kept rows)."""
        out = super().decisions(table, selection)
        ix = self.index_
        bench = [None if it is None else self.benches_[ix.item_bench[it]].label for it in self.items_]
        item = [None if it is None else ix.item_ids[it] for it in self.items_]
        out = out.append_column("bench", pa.array(bench, type=pa.string()))
        out = out.append_column("bench_item", pa.array(item, type=pa.string()))
        return out.append_column("overlap", pa.array(self.overlap_, type=pa.string()))

    @classmethod
    def summary_lines(cls, stats: dict[str, Any], params: dict[str, Any]) -> list[str]:
        """With ``--report``: every leaked benchmark item."""
        if not params.get("report") or "leaks" not in stats:
            return []
        return leak_lines(stats["leaks"]) or ["no benchmark item leaked"]

    def stats(self, selection: Selection) -> dict[str, Any]:
        base = super().stats(selection)
        by_bench: dict[str, int] = {}
        for reason, count in base["reasons"].items():
            key = reason.rsplit(":", 1)[0]
            by_bench[key] = by_bench.get(key, 0) + count
        return {
            **base,
            "reasons": by_bench,
            "benchmarks": [
                {"name": b.label, "against": b.given, "items": sum(1 for x in self.index_.item_bench if x == k)}
                for k, b in enumerate(self.benches_)
            ],
            "leaks": self.leaks_,
        }


def leak_lines(leaks: Sequence[dict[str, Any]], limit: int = 50) -> list[str]:
    """The ``--report`` lines: one per leaked benchmark item, most rows first.

    >>> leak_lines([{"bench": "gsm8k", "item": "test-3", "rows": 2}])
    ['gsm8k test-3: 2 rows']
    """
    lines = [f"{x['bench']} {x['item']}: {x['rows']} row{'s' if x['rows'] != 1 else ''}" for x in leaks[:limit]]
    if len(leaks) > limit:
        lines.append(f"... and {len(leaks) - limit} more items (all in the manifest's stats.leaks)")
    return lines
