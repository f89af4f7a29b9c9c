"""One self-contained HTML page that shows what an op did to a version: ``curate report REF --out report.html``.

Plots are matplotlib PNGs embedded as data URIs, so the page opens from disk with no server. Which plots
appear depends on what the version holds:

- a selector's ``decisions.parquet``: score distribution kept vs dropped, and drop reasons;
- ``fisher_gain``: the gain of each pick against its rank;
- ``pass_rate`` / ``stage`` (RL prompts): pass-rate histogram and prompts per stage;
- ``reward`` / ``advantage`` (rollouts): reward and advantage histograms;
- ``labels`` (token cleaning): kept-token share per row;
- ``task`` / ``difficulty`` (Condor): rows per task and difficulty;

and always the lineage chain with each op's parameters, and a sample of rows.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from curate.outputs import atomic_write, check_out, sweep_temps
from curate.store import Store, Version

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top}
th{background:#f4f4f4} .plots{display:flex;flex-wrap:wrap;gap:12px} .plots figure{margin:0}
figcaption{font-size:.85em;color:#555} code{background:#f4f4f4;padding:1px 3px}
td.cell{max-width:420px;white-space:pre-wrap;word-break:break-word}
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.2, 3.2))


def _hist(title: str, series: dict[str, np.ndarray], xlabel: str, bins: int | np.ndarray = 30) -> str:
    fig, ax = _figure()
    finite = [v[np.isfinite(v)] for v in series.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    if isinstance(bins, int) and allv.size and allv.min() != allv.max():
        bins = np.linspace(allv.min(), allv.max(), bins + 1)
    for label, v in zip(series, finite, strict=True):
        if v.size:
            ax.hist(v, bins=bins, alpha=0.6, label=f"{label} ({v.size})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    if len(series) > 1:
        ax.legend()
    return _png(fig)


def _bars(title: str, counts: dict[str, int], xlabel: str) -> str:
    fig, ax = _figure()
    keys = list(counts)
    ax.bar(range(len(keys)), [counts[k] for k in keys], color="#4c72b0")
    ax.set_xticks(
        range(len(keys)), keys, rotation=30 if len(keys) > 4 else 0, ha="right" if len(keys) > 4 else "center"
    )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("rows")
    return _png(fig)


def _line(title: str, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> str:
    fig, ax = _figure()
    ax.plot(x, y, marker=".", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(fig)


def _counts(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def reason_counts(reasons: list[str | None]) -> dict[str, int]:
    """Rows per reason kind: a reason that names a row or an item (``duplicate_of:<id>``,
    ``contaminated:<bench>:<item>``) counts under the part before its first ``:``, so one bar stands for each kind.

    >>> reason_counts(["", "duplicate_of:a", "duplicate_of:b", "below_budget"])
    {'below_budget': 1, 'duplicate_of': 2, 'kept': 1}
    """
    return _counts([r.split(":", 1)[0] if r else "kept" for r in reasons])


def plots_for(version: Version) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for every plot this version supports."""
    table = version.to_arrow()
    cols = set(table.column_names)
    plots: list[tuple[str, str]] = []
    decisions = version.decisions()
    if decisions is not None and decisions.num_rows:
        d = decisions.to_pydict()
        score = np.asarray([np.nan if s is None else s for s in d["score"]], dtype=np.float64)
        kept = np.asarray(d["kept"], dtype=bool)
        if np.isfinite(score).any():
            plots.append(
                (
                    "Score distribution, kept vs dropped",
                    _hist("score: kept vs dropped", {"kept": score[kept], "dropped": score[~kept]}, "score"),
                )
            )
        reasons = reason_counts(d["reason"])
        plots.append(("Decisions: kept and drop reasons", _bars("decisions", reasons, "reason")))
    if "fisher_gain" in cols and "fisher_rank" in cols:
        plots.append(
            (
                "FisherSFT gain of each pick (greedy order)",
                _line(
                    "gain vs pick rank",
                    np.asarray(table.column("fisher_rank").to_pylist()),
                    np.asarray(table.column("fisher_gain").to_pylist(), dtype=float),
                    "rank",
                    "gain",
                ),
            )
        )
    if "pass_rate" in cols:
        pr = np.asarray(table.column("pass_rate").to_pylist(), dtype=float)
        plots.append(("Pass-rate histogram", _hist("pass rate", {"rows": pr}, "pass rate", np.linspace(0, 1, 11))))
    if "stage" in cols:
        plots.append(
            ("Curriculum stages", _bars("rows per stage", _counts(table.column("stage").to_pylist()), "stage"))
        )
    if "reward" in cols:
        r = np.asarray(table.column("reward").to_pylist(), dtype=float)
        plots.append(("Reward histogram", _hist("reward", {"completions": r}, "reward")))
    if "advantage" in cols:
        a = np.asarray(table.column("advantage").to_pylist(), dtype=float)
        plots.append(("Advantage over the kept subset", _hist("advantage", {"completions": a}, "advantage")))
    if "labels" in cols:
        share = _kept_token_share(table)
        plots.append(
            (
                "Kept-token share per row (token cleaning)",
                _hist("kept response tokens / response tokens", {"rows": share}, "share", np.linspace(0, 1, 21)),
            )
        )
    for col in ("task", "difficulty", "level"):
        if col in cols:
            plots.append((f"Rows per {col}", _bars(f"rows per {col}", _counts(table.column(col).to_pylist()), col)))
    return plots


def _kept_token_share(table) -> np.ndarray:
    if "kept_token_share" in table.column_names:
        return np.asarray(table.column("kept_token_share").to_pylist(), dtype=float)
    labels = table.column("labels").to_pylist()
    lengths = [len(x) for x in labels]
    # Without the response mask only the kept share of all tokens is known: say so in the axis, not silently.
    return np.asarray([sum(t != -100 for t in x) / max(n, 1) for x, n in zip(labels, lengths, strict=True)])


def _cell(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return html.escape(text[:600] + ("…" if len(text) > 600 else ""))


def render(version: Version, *, store: Store | None = None, sample_rows: int = 8) -> str:
    """The report page as one HTML string."""
    from curate.store import lineage

    info = lineage(version, store=store or version.store)
    chain = []
    node = info
    while node:
        chain.append(node)
        node = node["parents"][0] if node["parents"] else None
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>curate report: {html.escape(version.ref)}"
        f"</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(version.ref)}</h1>",
        f"<p>id <code>{version.id}</code>, {len(version)} rows, created {version.manifest.get('created', '')}</p>",
    ]
    stats = version.manifest.get("stats") or {}
    if stats:
        parts.append(f"<h2>Stats</h2><pre>{html.escape(json.dumps(stats, indent=1, default=str)[:4000])}</pre>")
    parts.append("<h2>Plots</h2><div class='plots'>")
    for caption, png in plots_for(version):
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div><h2>Lineage</h2><table><tr><th>version</th><th>rows</th><th>op</th><th>parameters</th></tr>")
    for n in chain:
        op = dict(n["op"])
        name = op.pop("name", "")
        parts.append(
            f"<tr><td>{html.escape(n['ref'])}</td><td>{n['rows']}</td><td>{html.escape(str(name))}</td>"
            f"<td class='cell'>{_cell(op)}</td></tr>"
        )
    parts.append("</table><h2>Rows</h2>")
    rows = version.to_arrow().slice(0, sample_rows).to_pylist()
    if rows:
        shown = [c for c in rows[0] if c not in ("input_ids", "labels", "token_scores")][:8]
        parts.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in shown) + "</tr>")
        for r in rows:
            parts.append("<tr>" + "".join(f"<td class='cell'>{_cell(r[c])}</td>" for c in shown) + "</tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(ref: str | Version, out: str | Path, *, store: Store | None = None) -> Path:
    """Write the report for ``ref`` to ``out`` (atomically) and return the path.

    >>> write_report("sft-fisher", "report.html")   # doctest: +SKIP
    """
    from curate.store import get_store

    s = get_store(store)
    out = check_out(out, s)
    version = s.load(ref)
    page = render(version, store=s)
    sweep_temps(out.parent)
    return atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
