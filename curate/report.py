"""One self-contained HTML page that shows what an op did to a version: ``curate report REF --out report.html``.

Plots are matplotlib PNGs embedded as data URIs, so the page opens from disk with no server. Which plots
appear depends on what the version holds:

- a selector's ``decisions.parquet``: score distribution kept vs dropped, and drop reasons;
- ``fisher_gain``: the gain of each pick against its rank;
- ``pass_rate`` / ``stage`` (RL prompts): pass-rate histogram and prompts per stage;
- ``reward`` / ``advantage`` (rollouts): reward and advantage histograms;
- ``labels`` (token cleaning): kept-token share per row;
- ``task`` / ``difficulty`` (Condor): rows per task and difficulty;
- a compare version (columns ``arm``, ``seed``, ``trained_tokens`` and a ``summary`` in its stats, from
  ``curate compare``): a "Comparison" table first (per metric and arm: the mean with its 95% interval, the paired
  difference to ``random`` with its interval and verdict, whether the arm's interval overlaps random's, mean
  trained tokens, rows and wall seconds per run), then per metric each arm's mean with its interval as error bars
  (random's interval shaded), and the metric against trained tokens, one point per run (not for RL compares,
  which train on no counted tokens); its rows table shows every run, without the per-held-out-row lists;

and always the lineage chain with each op's parameters, and a sample of rows.

Stats and parameters are key / value tables (nested dicts flattened to dotted keys). The decisions plots count the
unit the selector's stats count: prompts when every rollout of a prompt shares its prompt's decision (a prompt-level
selector on a rollouts version), rows otherwise, and say which. A histogram with more than half its rows in one bin
uses a log count scale. A select op on a rollouts version lists the rollout settings of its own options (``n``,
``max_tokens``, ...) as not used, since the rollouts it read were made by the parent's op, whose row shows them.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.comparison import LOWER_IS_BETTER, verdict
from curate.outputs import atomic_write, check_out, sweep_temps
from curate.rollouts import EXECUTION_ONLY, RolloutConfig
from curate.store import Store, Version

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em} td,th{border:1px solid #ddd;padding:4px 6px;vertical-align:top}
th{background:#f4f4f4} .plots{display:flex;flex-wrap:wrap;gap:12px} .plots figure{margin:0}
figcaption{font-size:.85em;color:#555} code{background:#f4f4f4;padding:1px 3px}
td.cell{max-width:420px;white-space:pre-wrap;word-break:break-word}
table.kv{font-size:1em} table.kv td{border-color:#eee} table.kv td.key{color:#555;white-space:nowrap}
"""

#: a histogram whose fullest bin holds more than this share of its rows is drawn on a log count scale
LOG_SHARE = 0.5


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _figure(height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI; must precede pyplot
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.2, height))


def dominated(values: np.ndarray, bins: int | np.ndarray = 30) -> bool:
    """Whether one bin holds more than ``LOG_SHARE`` of the finite values (the histogram then uses a log scale).

    >>> dominated(np.array([0.0] * 9 + [1.0])), dominated(np.array([0.0, 0.5, 1.0]))
    (True, False)
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size < 2 or v.min() == v.max():  # one bar either way: a log axis shows nothing more
        return False
    counts, _ = np.histogram(v, bins=bins)
    return bool(counts.max() > LOG_SHARE * v.size)


def _hist(
    title: str, series: dict[str, np.ndarray], xlabel: str, bins: int | np.ndarray = 30, unit: str = "rows"
) -> tuple[str, bool]:
    """(base64 PNG, whether the count axis is logarithmic)."""
    fig, ax = _figure()
    finite = [v[np.isfinite(v)] for v in series.values()]
    allv = np.concatenate(finite) if finite else np.zeros(0)
    if isinstance(bins, int) and allv.size and allv.min() != allv.max():
        bins = np.linspace(allv.min(), allv.max(), bins + 1)
    for label, v in zip(series, finite, strict=True):
        if v.size:
            ax.hist(v, bins=bins, alpha=0.6, label=f"{label} ({v.size})")
    # one dominant value (most rewards 0, most scores tied) flattens every other bar to nothing on a linear axis
    log = dominated(allv, bins)
    if log:
        ax.set_yscale("log")
    ax.set_title(title + (" (log scale)" if log else ""))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit + (" (log scale)" if log else ""))
    if len(series) > 1:
        ax.legend()
    return _png(fig), log


def _hist_plot(caption: str, *args: Any, **kwargs: Any) -> tuple[str, str]:
    png, log = _hist(*args, **kwargs)
    return (caption + (" (log count scale)" if log else ""), png)


def _bars(title: str, counts: dict[str, int], xlabel: str, unit: str = "rows") -> str:
    fig, ax = _figure()
    keys = list(counts)
    ax.bar(range(len(keys)), [counts[k] for k in keys], color="#4c72b0")
    ax.set_xticks(
        range(len(keys)), keys, rotation=30 if len(keys) > 4 else 0, ha="right" if len(keys) > 4 else "center"
    )
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(unit)
    return _png(fig)


def _line(title: str, x: np.ndarray, y: np.ndarray, xlabel: str, ylabel: str) -> str:
    fig, ax = _figure()
    ax.plot(x, y, marker=".", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _png(fig)


#: the row-matched control arm of ``curate compare``: the differences in a compare summary are to it
_RANDOM = "random"
#: a compare version's per-held-out-row lists: too long for the rows table
_RUN_LISTS = ("row_sums", "row_counts", "row_rewards")
#: a compare run's wall seconds, summed when a version records them
_RUN_TIMES = ("select_s", "train_s", "score_s")
_METRIC_LABELS = {"heldout_loss": "held-out NLL", "accuracy": "accuracy", "heldout_reward": "held-out reward"}


def _metric_label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric)


def _title(metric: str) -> str:
    label = _metric_label(metric)
    return label[:1].upper() + label[1:]


def _direction(metric: str) -> str:
    return "lower is better" if metric in LOWER_IS_BETTER else "higher is better"


def _fmt(x: float) -> str:
    """Four significant digits, trailing zeros kept so a column reads evenly (``5.560``, ``6.139e-05``)."""
    return f"{x:#.4g}"


def _comparison_summary(version: Version) -> list[dict[str, Any]] | None:
    """The summary rows of a compare version (one per metric and arm), or None when ``version`` is not one: it has
    the columns ``arm``, ``seed``, ``trained_tokens`` and a ``summary`` list in its stats."""
    if not {"arm", "seed", "trained_tokens"} <= set(version.columns):
        return None
    summary = (version.manifest.get("stats") or {}).get("summary")
    return summary if isinstance(summary, list) and summary else None


def _runs_by_arm(version: Version) -> dict[str, list[dict[str, Any]]]:
    keep = [c for c in version.columns if c not in _RUN_LISTS]
    out: dict[str, list[dict[str, Any]]] = {}
    for run in version.to_arrow().select(keep).to_pylist():
        out.setdefault(run["arm"], []).append(run)
    return out


def _wall_s(run: dict[str, Any]) -> float | None:
    parts = [run[c] for c in _RUN_TIMES if run.get(c) is not None]
    return float(sum(parts)) if parts else None


def _overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def _comparison_html(version: Version) -> str:
    """The "Comparison" section of a compare version's page ("" for any other version): one line saying which
    direction is better for each metric, the table of arms, and a plain sentence naming the arms whose interval
    overlaps random's."""
    summary = _comparison_summary(version)
    if summary is None:
        return ""
    runs = _runs_by_arm(version)
    timed = any(c in version.columns for c in _RUN_TIMES)
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    random = {r["metric"]: r for r in summary if r["arm"] == _RANDOM}
    esc = html.escape
    parts = [
        "<h2>Comparison</h2>",
        "<p>"
        + "; ".join(f"{esc(_metric_label(m))} (<code>{esc(m)}</code>): {_direction(m)}" for m in metrics)
        + ". Intervals are 95% bootstrap intervals over held-out rows and seeds; the difference to random is paired"
        " (same held-out rows), so the verdict is read from its interval.</p>",
        "<table><tr><th>metric</th><th>arm</th><th>mean [95% interval]</th><th>vs random [95% interval]</th>"
        "<th>verdict</th><th>interval vs random's</th><th>runs</th><th>trained tokens (mean)</th><th>rows (mean)</th>"
        + ("<th>wall s per run (select+train+score)</th>" if timed else "")
        + "</tr>",
    ]
    overlapping: dict[str, list[str]] = {}
    for row in summary:
        metric, arm = row["metric"], row["arm"]
        d = row.get("vs_random")
        diff = f"{_fmt(d['diff'])} [{_fmt(d['ci_low'])}, {_fmt(d['ci_high'])}]" if d else ""
        ref = random.get(metric)
        overlap = ""
        if ref is not None and arm != _RANDOM:
            overlap = "overlaps" if _overlaps(row, ref) else "no overlap"
            if overlap == "overlaps":
                overlapping.setdefault(metric, []).append(arm)
        arm_runs = runs.get(arm, [])
        tokens = [r["trained_tokens"] for r in arm_runs]
        n_rows = [r["rows"] for r in arm_runs if r.get("rows") is not None]
        cells = [
            esc(_metric_label(metric)),
            esc(arm),
            f"{_fmt(row['mean'])} [{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
            diff,
            esc(verdict(row)),
            overlap,
            str(len(arm_runs)),
            f"{np.mean(tokens):,.0f}" if tokens else "",
            f"{np.mean(n_rows):,.1f}" if n_rows else "",
        ]
        if timed:
            walls = [w for w in map(_wall_s, arm_runs) if w is not None]
            cells.append(f"{np.mean(walls):,.1f}" if walls else "not recorded")
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    for metric, arms in overlapping.items():
        which = (
            f"the 95% interval of {arms[0]} overlaps"
            if len(arms) == 1
            else (f"the 95% intervals of {', '.join(arms[:-1])} and {arms[-1]} overlap")
        )
        parts.append(
            f"<p>{esc(_title(metric))}: {esc(which)} random's. Overlap alone settles nothing: the verdict comes "
            "from the paired difference, which can exclude 0 while the intervals overlap.</p>"
        )
    return "\n".join(parts)


def _arm_colors(arms: list[str]) -> dict[str, str]:
    return {a: f"C{i % 10}" for i, a in enumerate(arms)}


def _interval_plot(metric: str, rows: list[dict[str, Any]], colors: dict[str, str]) -> str:
    fig, ax = _figure(height=1.4 + 0.4 * len(rows))
    ref = next((r for r in rows if r["arm"] == _RANDOM), None)
    if ref is not None:
        ax.axvspan(ref["ci_low"], ref["ci_high"], color="#999999", alpha=0.25)
    for y, r in enumerate(rows):
        err = [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]]
        ax.errorbar([r["mean"]], [y], xerr=err, fmt="o", capsize=4, color=colors[r["arm"]])
    ax.set_yticks(range(len(rows)), [r["arm"] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)  # first arm on top, as in the table
    ax.set_title(f"{_title(metric)} per arm ({_direction(metric)})")
    ax.set_xlabel(f"{metric}: mean and 95% interval" + (" (shaded: random's)" if ref is not None else ""))
    return _png(fig)


def _tokens_plot(metric: str, runs: dict[str, list[dict[str, Any]]], colors: dict[str, str]) -> str:
    fig, ax = _figure()
    for arm, arm_runs in runs.items():
        pts = np.asarray([(r["trained_tokens"], r[metric]) for r in arm_runs if r.get(metric) is not None], float)
        if not len(pts):
            continue
        ax.scatter(pts[:, 0], pts[:, 1], s=18, alpha=0.8, color=colors[arm], label=arm)
        # hollow, so runs that land on their arm's mean (a deterministic arm's seeds often agree) stay visible
        ax.scatter(*pts.mean(axis=0), s=110, marker="D", facecolors="none", edgecolors=colors[arm], linewidths=1.5)
    ax.scatter([], [], s=60, marker="D", facecolors="none", edgecolors="black", label="arm mean")
    ax.set_title(f"{_title(metric)} vs trained tokens ({_direction(metric)})")
    ax.set_xlabel("trained tokens")
    ax.set_ylabel(metric)
    ax.legend(fontsize="small")
    return _png(fig)


def _comparison_plots(version: Version) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of a compare version's plots: per metric, each arm's mean with its 95% interval, and
    the metric against trained tokens (one point per run, arm means as diamonds; none when no run counted trained
    tokens, as in RL compares, or no run has the metric). Empty for any other version."""
    summary = _comparison_summary(version)
    if summary is None:
        return []
    runs = _runs_by_arm(version)
    colors = _arm_colors(list(dict.fromkeys([*runs, *(r["arm"] for r in summary)])))
    plots = []
    metrics = list(dict.fromkeys(r["metric"] for r in summary))
    for metric in metrics:
        rows = [r for r in summary if r["metric"] == metric]
        plots.append((f"Per-arm {_metric_label(metric)} with 95% intervals", _interval_plot(metric, rows, colors)))
    counted = any(r["trained_tokens"] for arm_runs in runs.values() for r in arm_runs)
    for metric in metrics:
        has = any(r.get(metric) is not None for arm_runs in runs.values() for r in arm_runs)
        if counted and has:
            caption = f"{_title(metric)} vs trained tokens, one point per run"
            plots.append((caption, _tokens_plot(metric, runs, colors)))
    return plots


def _counts(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


def reason_counts(reasons: list[str | None], kept: list[bool] | None = None) -> dict[str, int]:
    """Rows per reason kind: a reason that names a row or an item (``duplicate_of:<id>``,
    ``contaminated:<bench>:<item>``) counts under the part before its first ``:``, so one bar stands for each kind.
    A kept row counts as ``kept`` whatever its reason says; a dropped row with no reason as ``dropped (no reason)``.

    >>> reason_counts(["", "duplicate_of:a", "duplicate_of:b", "below_budget"])
    {'below_budget': 1, 'duplicate_of': 2, 'kept': 1}
    >>> reason_counts(["", "", "x"], kept=[True, False, True])
    {'dropped (no reason)': 1, 'kept': 2}
    """
    if kept is None:
        kept = [not r for r in reasons]
    return _counts(
        [
            "kept" if k else r.split(":", 1)[0] if r else "dropped (no reason)"
            for r, k in zip(reasons, kept, strict=True)
        ]
    )


def decision_unit(decisions: dict[str, list[Any]]) -> str:
    """``"prompts"`` when the decisions carry a ``prompt_id`` and every row of a prompt shares its prompt's decision
    (a prompt-level selector on rollouts writes one decision row per rollout), else ``"rows"``: the unit the
    selector's ``kept`` / ``dropped`` stats count.

    >>> decision_unit({"prompt_id": ["a", "a", "b"], "kept": [True, True, False], "reason": ["", "", "x"]})
    'prompts'
    """
    if "prompt_id" not in decisions:
        return "rows"
    seen: dict[Any, tuple[bool, str]] = {}
    for pid, k, r in zip(decisions["prompt_id"], decisions["kept"], decisions["reason"], strict=True):
        if seen.setdefault(pid, (k, r)) != (k, r):
            return "rows"
    return "prompts" if len(seen) < len(decisions["prompt_id"]) else "rows"


def _per_unit(decisions: dict[str, list[Any]], unit: str) -> dict[str, list[Any]]:
    """The decisions, one row per prompt (its first rollout's row) when ``unit`` is prompts."""
    if unit != "prompts":
        return decisions
    first: dict[Any, int] = {}
    for i, pid in enumerate(decisions["prompt_id"]):
        first.setdefault(pid, i)
    rows = list(first.values())
    return {k: [v[i] for i in rows] for k, v in decisions.items()}


def _first_per_prompt(table) -> np.ndarray:
    """Row index of each prompt's first row in a long (one row per rollout) table."""
    first: dict[Any, int] = {}
    for i, pid in enumerate(table.column("prompt_id").to_pylist()):
        first.setdefault(pid, i)
    return np.asarray(list(first.values()), dtype=np.int64)


def decisions_by_unit(version: Version) -> tuple[str, dict[str, list[Any]]] | None:
    """(unit, decisions as columns, one row per unit) of a version with decisions, else None: the rows the decisions
    plots count (``reason_counts(d["reason"], d["kept"])`` gives the bars).

    >>> unit, d = decisions_by_unit(curate.load("math-curriculum"))   # doctest: +SKIP
    """
    decisions = version.decisions()
    if decisions is None or not decisions.num_rows:
        return None
    raw = decisions.to_pydict()
    unit = decision_unit(raw)
    return unit, _per_unit(raw, unit)


def plots_for(version: Version) -> list[tuple[str, str]]:
    """(caption, base64 PNG) for every plot this version supports."""
    table = version.to_arrow()
    cols = set(table.column_names)
    plots = _comparison_plots(version)
    decided = decisions_by_unit(version)
    if decided is not None:
        unit, d = decided
        score = np.asarray([np.nan if s is None else s for s in d["score"]], dtype=np.float64)
        kept = np.asarray(d["kept"], dtype=bool)
        if np.isfinite(score).any():
            plots.append(
                _hist_plot(
                    f"Score distribution, kept vs dropped ({unit})",
                    f"score: kept vs dropped {unit}",
                    {"kept": score[kept], "dropped": score[~kept]},
                    "score",
                    unit=unit,
                )
            )
        reasons = reason_counts(d["reason"], d["kept"])
        plots.append(
            (f"Decisions: kept and drop reasons ({unit})", _bars(f"decisions ({unit})", reasons, "reason", unit))
        )
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
        # a rollouts version repeats each prompt's pass rate on every rollout row: count each prompt once
        rate_unit = "prompts" if "prompt_id" in cols else "rows"
        rates = table.column("pass_rate")
        if rate_unit == "prompts":
            rates = rates.take(pa.array(_first_per_prompt(table)))
        pr = np.asarray(rates.to_pylist(), dtype=float)
        plots.append(
            _hist_plot(
                f"Pass-rate histogram ({rate_unit})",
                "pass rate",
                {rate_unit: pr},
                "pass rate",
                np.linspace(0, 1, 11),
                unit=rate_unit,
            )
        )
    if "stage" in cols:
        plots.append(
            ("Curriculum stages", _bars("rows per stage", _counts(table.column("stage").to_pylist()), "stage"))
        )
    if "reward" in cols:
        r = np.asarray(table.column("reward").to_pylist(), dtype=float)
        plots.append(_hist_plot("Reward histogram", "reward", {"completions": r}, "reward", unit="completions"))
    if "advantage" in cols:
        a = np.asarray(table.column("advantage").to_pylist(), dtype=float)
        plots.append(
            _hist_plot(
                "Advantage over the kept subset", "advantage", {"completions": a}, "advantage", unit="completions"
            )
        )
    if "labels" in cols:
        share = _kept_token_share(table)
        plots.append(
            _hist_plot(
                "Kept-token share per row (token cleaning)",
                "kept response tokens / response tokens",
                {"rows": share},
                "share",
                np.linspace(0, 1, 21),
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


def flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) rows of a nested dict, in its order; an empty dict stays one row.

    >>> flatten({"config": {"n": 4, "max_tokens": 48}, "reasons": {}, "name": "x"})
    [('config.n', 4), ('config.max_tokens', 48), ('reasons', {}), ('name', 'x')]
    """
    out: list[tuple[str, Any]] = []
    for key, v in value.items():
        dotted = f"{prefix}{key}"
        if isinstance(v, dict) and v:
            out.extend(flatten(v, dotted + "."))
        else:
            out.append((dotted, v))
    return out


def _value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, list | tuple) and all(not isinstance(x, dict | list | tuple) for x in v):
        return html.escape(", ".join(str(x) for x in v)) if v else "(empty)"
    if isinstance(v, float):
        return html.escape(f"{v:.6g}")
    return _cell(v)


def kv_table(value: dict[str, Any]) -> str:
    """A key / value HTML table of ``value`` with nested dicts flattened to dotted keys."""
    rows = "".join(
        f"<tr><td class='key'>{html.escape(k)}</td><td class='cell'>{_value(v)}</td></tr>" for k, v in flatten(value)
    )
    return f"<table class='kv'><tr><th>key</th><th>value</th></tr>{rows}</table>"


#: a selector's own rollout options (``n``, ``max_tokens``, ...): unused when its input already held rollouts
_ROLLOUT_OPTIONS = frozenset(f.name for f in dataclasses.fields(RolloutConfig)) - set(EXECUTION_ONLY)


def ran_parameters(node: dict[str, Any]) -> dict[str, Any]:
    """The parameters of a lineage node's op (``name`` left out) as they ran: a selection that read a parent's
    rollouts (stats ``ran_rollouts: false``) recorded its own rollout options at their defaults; those show as not
    used, naming the parent whose op made the rollouts."""
    op = {k: v for k, v in (node.get("op") or {}).items() if k != "name"}
    params = op.get("params")
    read_rollouts = (node.get("stats") or {}).get("ran_rollouts") is False
    if read_rollouts and isinstance(params, dict):
        parent = node["parents"][0]["ref"] if node.get("parents") else "the parent"
        unused = [k for k in params if k in _ROLLOUT_OPTIONS]
        op["params"] = {k: v for k, v in params.items() if k not in _ROLLOUT_OPTIONS}
        if unused:
            op[f"params.{{{','.join(unused)}}}"] = f"not used: the rollouts came from {parent}, whose row shows them"
    return op


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
    parts.append(_comparison_html(version))
    stats = version.manifest.get("stats") or {}
    if stats:
        parts.append("<h2>Stats</h2>")
        decided = decisions_by_unit(version) if "kept" in stats else None
        if decided is not None:
            unit, d = decided
            rows = version.decisions().num_rows
            extra = f" ({rows} decision rows, one per rollout)" if unit == "prompts" else ""
            parts.append(
                f"<p>kept and dropped count {unit}{extra}, as the decisions plots do: "
                f"{sum(d['kept'])} kept, {len(d['kept']) - sum(d['kept'])} dropped.</p>"
            )
        parts.append(kv_table(stats))
    parts.append("<h2>Plots</h2><div class='plots'>")
    for caption, png in plots_for(version):
        parts.append(
            f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</div><h2>Lineage</h2><table><tr><th>version</th><th>rows</th><th>op</th><th>parameters</th></tr>")
    for n in chain:
        name = (n["op"] or {}).get("name", "")
        parts.append(
            f"<tr><td>{html.escape(n['ref'])}</td><td>{n['rows']}</td><td>{html.escape(str(name))}</td>"
            f"<td>{kv_table(ran_parameters(n))}</td></tr>"
        )
    parts.append("</table><h2>Rows</h2>")
    compared = _comparison_summary(version) is not None
    # a compare version has one short row per run: show every run and all its scalar columns
    rows = version.to_arrow().slice(0, max(sample_rows, len(version)) if compared else sample_rows).to_pylist()
    if rows:
        hidden = ("input_ids", "labels", "token_scores", *(_RUN_LISTS if compared else ()))
        shown = [c for c in rows[0] if c not in hidden][: None if compared else 8]
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
