"""Tiny helpers shared by the benchmark scripts: a plain-text table, a timer, synthetic FisherSFT features."""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import contextmanager


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns; floats with 4 significant digits.

    >>> print(table(["n", "x"], [[1, 0.5]]))
    n    x
    1  0.5
    """

    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


@contextmanager
def timed(out: dict, key: str):
    """Store wall and CPU seconds of the block in ``out[key]`` as ``(wall, cpu)``."""
    w, c = time.perf_counter(), time.process_time()
    yield
    out[key] = (time.perf_counter() - w, time.process_time() - c)


def make_features(n: int, lo: int, hi: int, d: int, seed: int = 0) -> list:
    """n ragged float32 examples of lo..hi tokens of N(0, Sigma) in d dims, Sigma's eigenvalues spread 1..0.01."""
    import numpy as np

    rng = np.random.default_rng(seed)
    scale = np.sqrt(np.logspace(0, -2, d))
    return [(rng.standard_normal((int(m), d)) * scale).astype(np.float32) for m in rng.integers(lo, hi + 1, n)]
