"""Text of a row and its words, hashed: what the dedup and decontamination selectors compare.

``canonical`` is the normal form both compare in: Unicode NFKC, case-folded, whitespace collapsed to one space.
``row_texts`` pulls the prompt and/or response text out of a batch of canonical rows (``messages``, or
``prompt`` + ``completion``) without building a dict per message. ``words`` splits a whole batch of texts into
words (runs of letters and digits of the canonical form; punctuation and ``_`` separate words) and hashes every
word to 64 bits with numpy over the whole batch, with no Python step per word; ``ngram_hashes``
combines each run of ``n`` consecutive words of a text into one 64-bit hash. The hashes are fixed functions of
the bytes (no per-process seed), so a result never depends on the process that computed it.

    >>> canonical("  Ｆｕｌｌ\\u00a0WIDTH  text ")
    'full width text'
    >>> w = words(["Janet’s ducks lay 16 eggs.", "janet s DUCKS, lay 16 eggs"])
    >>> w.offsets.tolist(), bool((w.hashes[:6] == w.hashes[6:]).all())
    ([0, 6, 12], True)
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError

__all__ = [
    "FIELDS",
    "Words",
    "batch_words",
    "canonical",
    "iter_batches",
    "mix64",
    "ngram_hashes",
    "row_texts",
    "words",
]

#: the parts of a row that can be compared: the turns before the last assistant turn, and the rest
FIELDS = ("prompt", "response")

_U64 = np.uint64
# The low k bytes of a little-endian uint64, k = 0..8; bits that mark a letter byte (see words()).
_MASK = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=_U64)
_LETTER_BITS = _U64(0xC0C0C0C0C0C0C0C0)
# Separates the texts of a batch in the joined string; NFKC never composes across it.
_SEP = "\x00"
# The odd base of the polynomial n-gram hash, and the multiplier that mixes a word's length into its hash.
_Q = 0xD1B54A32D192ED03
_LENGTH_MULT = _U64(0x9E3779B97F4A7C15)


def canonical(text: str) -> str:
    """Unicode NFKC, case-folded, every whitespace run one space, stripped: the form rows are compared in.

    >>> canonical("Ａ  b\\tC\\n")
    'a b c'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64: spreads every input bit over every output bit.

    >>> mix64(np.array([0, 1], dtype=np.uint64)).tolist()
    [0, 6238072747940578789]
    """
    x = np.array(x, dtype=_U64)  # a copy, then every step in place: half the temporaries
    tmp = np.empty_like(x)
    for shift, mult in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
        np.right_shift(x, _U64(shift), out=tmp)
        x ^= tmp
        x *= _U64(mult)
    np.right_shift(x, _U64(31), out=tmp)
    x ^= tmp
    return x


class _Powers:
    """base**j and base**-j mod 2**64 for j < n, grown on demand (shared: the tables only ever get longer)."""

    def __init__(self, base: int) -> None:
        self.base = base
        self.pw = np.ones(1, dtype=_U64)
        self.ipw = np.ones(1, dtype=_U64)

    def get(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if len(self.pw) < n:
            size = max(n, 2 * len(self.pw), 1 << 16)
            inv = pow(self.base, -1, 1 << 64)
            self.pw = _geometric(self.base, size)
            self.ipw = _geometric(inv, size)
        return self.pw[:n], self.ipw[:n]


def _geometric(base: int, n: int) -> np.ndarray:
    # Doubling: out[k:2k] = out[:k] * base**k, all in wrapping uint64 arithmetic.
    out = np.ones(n, dtype=_U64)
    if n > 1:
        out[1] = _U64(base)
    k = 2 if n > 1 else 1
    while k < n:
        step = _U64(pow(base, k, 1 << 64))
        m = min(k, n - k)
        out[k : k + m] = out[:m] * step
        k += m
    return out


_QPOWERS = _Powers(_Q)


@dataclass
class Words:
    """The words of a batch of texts: flat arrays over all words, text after text.

    ``hashes`` (uint64 per word), ``numeric`` (the word is all digits), ``start``/``end`` (byte offsets of the
    word in ``data``, the UTF-8 canonical text of the batch) and ``offsets`` (text t's words are
    ``offsets[t]:offsets[t + 1]``).
    """

    hashes: np.ndarray
    numeric: np.ndarray
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray
    data: bytes

    def text(self, a: int, b: int) -> str:
        """Words ``a`` to ``b - 1`` (flat indices) as canonical text, one space between words."""
        if b <= a:
            return ""
        spans = zip(self.start[a:b].tolist(), self.end[a:b].tolist(), strict=True)
        return " ".join(self.data[s:e].decode("utf-8", "replace") for s, e in spans)


def words(texts: Sequence[str]) -> Words:
    """Split and hash the words of every text in one pass over the batch (see the module docstring).

    >>> w = words(["a b", "", "b"])
    >>> w.offsets.tolist(), w.hashes[1] == w.hashes[2]
    ([0, 2, 2, 3], np.True_)
    """
    joined = _SEP.join(texts)
    if joined.count(_SEP) != max(len(texts) - 1, 0):  # a text holds the separator itself: blank it there
        joined = _SEP.join(t.replace(_SEP, " ") for t in texts)
    return _words(np.frombuffer(joined.encode("utf-8"), dtype=np.uint8), len(texts))


def batch_words(batch: pa.RecordBatch, fields: Sequence[str] = FIELDS) -> Words:
    """``words(row_texts(batch, fields))`` without a Python string per row where the batch allows: the whole
    conversation of a ``messages`` column is cut straight out of the Arrow content buffer.

    >>> t = pa.table({"messages": [[{"role": "user", "content": "Hi you"}, {"role": "assistant", "content": "Yo"}]]})
    >>> batch_words(t.to_batches()[0]).offsets.tolist()
    [0, 3]
    """
    if set(fields) != set(FIELDS) or "messages" not in batch.schema.names or batch.num_rows == 0:
        return words(row_texts(batch, fields))
    col = batch.column("messages")
    turns = col.offsets.to_numpy().astype(np.int64)
    turns -= turns[0]
    content = col.flatten().field("content")
    content = content.fill_null("") if content.null_count else content
    if not pa.types.is_string(content.type) or not len(content):
        return words(row_texts(batch, fields))
    at = np.frombuffer(content.buffers()[1], dtype=np.int32)[content.offset : content.offset + len(content) + 1]
    at = at.astype(np.int64)
    raw = content.buffers()[2]
    b = np.frombuffer(raw, dtype=np.uint8)[at[0] : at[-1]] if raw is not None else np.zeros(0, np.uint8)
    at -= at[0]
    if not b.all():  # the separator may not occur inside a text
        b = np.where(b == 0, np.uint8(32), b)
    # Turn i of a row is joined to turn i - 1 by a newline, rows are separated by a 0 byte: one insert does both.
    first_turn = np.zeros(len(content), dtype=bool)
    first_turn[turns[:-1][turns[:-1] < len(content)]] = True
    inner = np.flatnonzero(~first_turn[1:]) + 1  # turns that continue a row
    where = np.concatenate([at[turns[1:-1]], at[inner]])
    what = np.concatenate([np.zeros(len(turns) - 2, np.uint8), np.full(len(inner), 10, np.uint8)])
    order = np.argsort(where, kind="stable")
    return _words(np.insert(b, where[order], what[order]), batch.num_rows)


def _words(b: np.ndarray, n_texts: int) -> Words:
    """The words of ``n_texts`` UTF-8 texts in ``b``, separated by one 0 byte."""
    if not b.size or b.max() < 0x80:
        lead = np.zeros(0, np.int64)
    else:
        b, lead, size, cp = _nfkc_where_needed(b, n_texts)
    b = b + ((b - np.uint8(65)) < 26).view(np.uint8) * np.uint8(32)  # ASCII A-Z to a-z
    data = b.tobytes()
    # Word bytes: ASCII digits and letters, and every byte of a non-ASCII character that is a letter or digit
    # (str.isalnum, as the regex class [^\W_]); the rest separate words.
    is_word = ((b - np.uint8(48)) < 10) | ((b - np.uint8(97)) < 26)
    if len(lead):
        alnum = _table("alnum")[np.minimum(cp, 0xFFFF)]
        wide = np.flatnonzero(cp > 0xFFFF)
        alnum[wide] = [chr(int(c)).isalnum() for c in cp[wide]]
        for k in range(4):
            is_word[lead[alnum & (size > k)] + k] = True
    # Word edges alternate start, end, start, ... once the batch is padded with a non-word byte on both sides.
    padded = np.zeros(len(b) + 2, dtype=bool)
    padded[1:-1] = is_word
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    start, end = edges[0::2], edges[1::2]
    bounds = np.zeros(n_texts + 1, dtype=np.int64)  # where each text starts (its separator) and the end
    if n_texts:
        bounds[1:-1] = np.flatnonzero(b == 0)
        bounds[-1] = len(b)
    offsets = np.searchsorted(start, bounds).astype(np.int64)
    if not len(start):
        empty = np.zeros(0, dtype=np.int64)
        return Words(np.zeros(0, _U64), np.zeros(0, bool), empty, empty, offsets, data)
    # Per word, not per byte: read the word 8 bytes at a time straight out of the buffer (an unaligned uint64 view
    # at every byte offset), mask off what follows it, and mix. Most words take one read.
    chunks = np.ndarray((len(data),), dtype="<u8", buffer=data + bytes(8), strides=(1,))
    length = (end - start).astype(np.int64)
    part = chunks[start] & _MASK[np.minimum(length, 8)]
    hashes = mix64(part ^ (length.astype(_U64) * _LENGTH_MULT))
    # Digits are the only word bytes with neither bit 0x40 (a-z) nor 0x80 (UTF-8 of other letters) set.
    numeric = (part & _LETTER_BITS) == 0
    long = np.flatnonzero(length > 8)
    k = 8
    while len(long):
        part = chunks[start[long] + k] & _MASK[np.minimum(length[long] - k, 8)]
        hashes[long] = mix64(hashes[long] ^ part)
        numeric[long] &= (part & _LETTER_BITS) == 0
        k += 8
        long = long[length[long] > k]
    return Words(hashes, numeric, start.astype(np.int64), end.astype(np.int64), offsets, data)


_TABLES: dict[str, np.ndarray] = {}


def _table(name: str) -> np.ndarray:
    """Per code point of the Basic Multilingual Plane: ``alnum`` (str.isalnum) and ``inert`` (a punctuation, symbol
    or space character that NFKC and case folding leave alone and that never composes: a text whose only
    non-ASCII characters are inert is already in normal form). Built on first use, a few ms each."""
    if name not in _TABLES:
        chars = [chr(c) for c in range(0x10000)]
        if name == "alnum":
            _TABLES[name] = np.array([c.isalnum() for c in chars], dtype=bool)
        else:
            _TABLES[name] = np.array(
                [
                    unicodedata.category(c)[0] in "PSZ"
                    and unicodedata.combining(c) == 0
                    and unicodedata.normalize("NFKC", c) == c
                    and c.casefold() == c
                    for c in chars
                ],
                dtype=bool,
            )
    return _TABLES[name]


def _code_points(b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position, byte length, code point) of every non-ASCII character of the UTF-8 bytes ``b``."""
    lead = np.flatnonzero(b >= 0xC0)
    last = len(b) - 1
    c0, c1, c2, c3 = (b[np.minimum(lead + k, last)].astype(np.int64) for k in range(4))
    size = 2 + (c0 >= 0xE0) + (c0 >= 0xF0)
    cp = np.where(
        size == 2,
        ((c0 & 0x1F) << 6) | (c1 & 0x3F),
        np.where(
            size == 3,
            ((c0 & 0x0F) << 12) | ((c1 & 0x3F) << 6) | (c2 & 0x3F),
            ((c0 & 0x07) << 18) | ((c1 & 0x3F) << 12) | ((c2 & 0x3F) << 6) | (c3 & 0x3F),
        ),
    )
    return lead, size, cp


def _nfkc_where_needed(b: np.ndarray, n_texts: int) -> tuple[np.ndarray, ...]:
    """``b`` with every text that holds a non-inert non-ASCII character NFKC-normalised and case-folded (in
    Python, one text at a time: typically a few texts of a batch, since curly quotes and dashes are inert), and the
    code points of the result."""
    lead, size, cp = _code_points(b)
    needs = ~_table("inert")[np.minimum(cp, 0xFFFF)] | (cp > 0xFFFF)
    if not needs.any():
        return b, lead, size, cp
    seps = np.flatnonzero(b == 0)
    starts = np.concatenate([[0], seps + 1])
    ends = np.concatenate([seps, [len(b)]])
    rows = np.unique(np.searchsorted(starts, lead[needs], side="right") - 1).tolist()
    data, pieces, cursor = b.tobytes(), [], 0
    for r in rows:
        a, z = int(starts[r]), int(ends[r])
        pieces.append(data[cursor:a])
        text = unicodedata.normalize("NFKC", data[a:z].decode("utf-8", "replace")).casefold()
        pieces.append(text.replace(_SEP, " ").encode("utf-8"))
        cursor = z
    pieces.append(data[cursor:])
    b = np.frombuffer(b"".join(pieces), dtype=np.uint8)
    return (b, *_code_points(b))


def ngram_hashes(hashes: np.ndarray, offsets: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash, first word index) of every run of ``n`` consecutive words inside one text; none across texts.

    >>> w = words(["a b c", "a b c d"])
    >>> g, at = ngram_hashes(w.hashes, w.offsets, 3)
    >>> at.tolist(), bool(g[0] == g[1])
    ([0, 3, 4], True)
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise CurateError(f"n-gram size must be a positive integer, got {n!r}")
    total = len(hashes)
    if total < n:
        return np.zeros(0, _U64), np.zeros(0, np.int64)
    # A run is inside one text when it ends no later than the text that holds its first word.
    text_end = np.repeat(offsets[1:], np.diff(offsets))
    at = np.flatnonzero(np.arange(n, total + 1) <= text_end[: total - n + 1])
    # Rolling polynomial hash, any n in the same few passes: sum_k h[i + k] Q**k = (G[i + n] - G[i]) * Q**-i.
    # Word hashes are already mixed, so the sum's bits are evenly spread: no final mixing needed.
    m = total - n + 1
    qw, iqw = _QPOWERS.get(total + 1)
    prefix = np.zeros(total + 1, dtype=_U64)
    np.cumsum(hashes * qw[:total], out=prefix[1:])
    grams = prefix[n:] - prefix[:m]
    grams *= iqw[:m]
    grams ^= _U64(n)
    return grams[at], at


# ---------------------------------------------------------------------------------------------- rows


def row_texts(batch: pa.RecordBatch | pa.Table, fields: Sequence[str] = FIELDS) -> list[str]:
    """The text of ``fields`` of each row, turns joined by newlines: ``prompt`` (``prompt`` turns, or the turns
    before the last assistant turn of ``messages``) and ``response`` (``completion``, or the rest of ``messages``).

    >>> t = pa.table({"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]})
    >>> row_texts(t), row_texts(t, ["response"])
    (['Hi\\nYo'], ['Yo'])
    """
    bad = [f for f in fields if f not in FIELDS]
    if bad or not fields:
        raise CurateError(f"--fields {','.join(fields)}: expected one or both of {', '.join(FIELDS)}")
    if isinstance(batch, pa.Table):
        batch = batch.combine_chunks().to_batches()[0] if batch.num_rows else None
        if batch is None:
            return []
    names = batch.schema.names
    n = batch.num_rows
    want_p, want_r = "prompt" in fields, "response" in fields
    prompt: list[str] = [""] * n
    response: list[str] = [""] * n
    if "messages" in names:
        if want_p and want_r:  # the whole conversation: no need to find where the response starts
            _, contents, off = _turns(batch.column("messages"), roles=False)
            return ["\n".join(contents[a:b]) for a, b in zip(off[:-1].tolist(), off[1:].tolist(), strict=True)]
        roles, contents, off = _turns(batch.column("messages"))
        for i in range(n):
            a, b = int(off[i]), int(off[i + 1])
            cut = a
            for j in range(b - 1, a - 1, -1):
                if roles[j] == "assistant":
                    cut = j
                    break
            else:
                cut = b  # no assistant turn: all of it is prompt
            if want_p:
                prompt[i] = "\n".join(contents[a:cut])
            if want_r:
                response[i] = "\n".join(contents[cut:b])
    else:
        if want_p and "prompt" in names:
            col = batch.column("prompt")
            if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                prompt = [p or "" for p in col.to_pylist()]
            else:
                _, contents, off = _turns(col)
                prompt = ["\n".join(contents[int(off[i]) : int(off[i + 1])]) for i in range(n)]
        if want_r and "completion" in names:
            response = [c or "" for c in batch.column("completion").to_pylist()]
    if want_p and want_r:
        return [f"{p}\n{r}" if p and r else p or r for p, r in zip(prompt, response, strict=True)]
    return prompt if want_p else response


def _turns(col: pa.Array, roles: bool = True) -> tuple[list[str], list[str], np.ndarray]:
    """(role per turn, content per turn, per-row offsets into them) of a list<struct<role, content>> column."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    off = col.offsets.to_numpy().astype(np.int64)
    off = off - off[0]
    flat = col.flatten()
    role = flat.field("role").to_pylist() if roles else []
    contents = flat.field("content").fill_null("").to_pylist()
    return role, contents, off


def iter_batches(version, columns: Sequence[str], batch_rows: int = 8192) -> Iterator[pa.RecordBatch]:
    """``columns`` of a store version, ``batch_rows`` rows at a time: at most one file's batch in memory."""
    from curate.store import read_parquet

    for f in version.data_files:
        if isinstance(f, Path):
            yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=list(columns))
        else:  # object storage: one GET per file (files hold a bounded number of rows)
            yield from read_parquet(f, columns=list(columns)).to_batches(max_chunksize=batch_rows)
