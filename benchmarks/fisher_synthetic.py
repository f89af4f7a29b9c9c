"""FisherSFT's synthetic experiment: greedy log-det vs uniform sentence selection for a softmax model.

Setup (Deb et al., ICML 2025, arXiv 2505.14826, synthetic section; our reconstruction, see
/work/shared/reference/algorithms.md 1.6): a vocabulary of L=20 labels, d=10 token vectors
x ~ N(0, Sigma) with Sigma's eigenvalues spread from 1 to 0.01 (random rotation), labels y ~ softmax(Theta*^T x)
from a random Theta* (entries N(0, 0.3^2)), N sentences of M tokens. Select n sentences by uniform sampling or
by `greedy_logdet` (lam=1) on their token vectors, fit multinomial logistic regression (scikit-learn, lbfgs,
C=100 i.e. weak L2, no intercept, like Theta*) on the selected sentences' tokens, and report the mean and max
over 2,000 test x ~ N(0, Sigma) of ||softmax(Theta_hat^T x) - softmax(Theta*^T x)||_2. A label that never occurs
in the selection gets probability 0. Averages over seeds (20 by default).

    python benchmarks/fisher_synthetic.py            # 20 seeds, N=2000, budgets 10..200
    python benchmarks/fisher_synthetic.py --quick    # 5 seeds, N=1000
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _util import table  # noqa: E402

from curate.selectors.fisher import greedy_logdet  # noqa: E402

L_LABELS, D = 20, 10
THETA_SCALE = 0.3  # logits of order 1: softmax neither flat nor saturated
EIGS = (0.0, -2.0)  # log10 of Sigma's largest and smallest eigenvalue
C_REG = 100.0  # scikit-learn's inverse L2 strength: weak regularisation
N_TEST = 2000


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _fit_predict(x: np.ndarray, y: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    probs = np.zeros((len(x_test), L_LABELS))
    labels = np.unique(y)
    if len(labels) == 1:  # scikit-learn refuses one class; the MLE puts all mass on it
        probs[:, labels[0]] = 1.0
        return probs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs convergence chatter on separable tiny selections
        model = LogisticRegression(C=C_REG, fit_intercept=False, max_iter=2000).fit(x, y)
    probs[:, model.classes_] = model.predict_proba(x_test)
    return probs


def one_seed(seed: int, budgets: list[int], *, n_sentences: int, tokens: int, lam: float = 1.0) -> dict:
    """Errors for one seed: ``{(budget, method): (mean error, max error)}``."""
    rng = np.random.default_rng(seed)
    rot, _ = np.linalg.qr(rng.standard_normal((D, D)))
    scale = rot * np.sqrt(np.logspace(EIGS[0], EIGS[1], D))  # x = scale @ z has covariance Sigma
    theta = rng.standard_normal((D, L_LABELS)) * THETA_SCALE
    X = rng.standard_normal((n_sentences, tokens, D)) @ scale.T
    cdf = np.cumsum(_softmax(X @ theta), axis=-1)
    Y = np.minimum((cdf < rng.random((n_sentences, tokens, 1))).sum(-1), L_LABELS - 1)
    x_test = rng.standard_normal((N_TEST, D)) @ scale.T
    p_test = _softmax(x_test @ theta)

    fisher_order, _ = greedy_logdet(list(X), max(budgets), lam=lam)
    uniform_order = rng.permutation(n_sentences)
    out = {}
    for n in budgets:
        for name, order in (("uniform", uniform_order), ("fisher", fisher_order)):
            sel = order[:n]
            err = np.linalg.norm(_fit_predict(X[sel].reshape(-1, D), Y[sel].reshape(-1), x_test) - p_test, axis=1)
            out[(n, name)] = (float(err.mean()), float(err.max()))
    return out


def run(seeds: list[int], budgets: list[int], *, n_sentences: int = 2000, tokens: int = 10) -> list[dict]:
    """One row per budget: mean over seeds of each method's mean and max error, and fisher / uniform ratios."""
    per_seed = [one_seed(s, budgets, n_sentences=n_sentences, tokens=tokens) for s in seeds]
    rows = []
    for n in budgets:
        u = np.mean([r[(n, "uniform")] for r in per_seed], axis=0)
        f = np.mean([r[(n, "fisher")] for r in per_seed], axis=0)
        wins = sum(r[(n, "fisher")][1] < r[(n, "uniform")][1] for r in per_seed)
        rows.append(
            {
                "budget": n,
                "uniform_mean": u[0],
                "uniform_max": u[1],
                "fisher_mean": f[0],
                "fisher_max": f[1],
                "mean_ratio": f[0] / u[0],
                "max_ratio": f[1] / u[1],
                "max_wins": wins,
                "seeds": len(seeds),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 seeds, N=1000, 3 budgets")
    ap.add_argument("--seeds", type=int, default=None)
    args = ap.parse_args()
    seeds = list(range(args.seeds or (5 if args.quick else 20)))
    budgets = [10, 20, 50] if args.quick else [10, 20, 50, 100, 200]
    n_sentences = 1000 if args.quick else 2000
    t0 = time.perf_counter()
    rows = run(seeds, budgets, n_sentences=n_sentences)
    print(
        f"FisherSFT synthetic: L={L_LABELS}, d={D}, N={n_sentences} sentences x 10 tokens, Sigma eigenvalues "
        f"1..0.01, {len(seeds)} seeds; prediction error ||p_hat - p*||_2 over {N_TEST} test x"
    )
    print(
        table(
            [
                "budget",
                "uniform mean",
                "uniform max",
                "fisher mean",
                "fisher max",
                "mean ratio",
                "max ratio",
                "fisher max < uniform",
            ],
            [
                [
                    r["budget"],
                    r["uniform_mean"],
                    r["uniform_max"],
                    r["fisher_mean"],
                    r["fisher_max"],
                    r["mean_ratio"],
                    r["max_ratio"],
                    f"{r['max_wins']}/{r['seeds']} seeds",
                ]
                for r in rows
            ],
        )
    )
    print(f"({time.perf_counter() - t0:.1f} s; ratio = fisher / uniform, below 1 means FisherSFT is better)")


if __name__ == "__main__":
    main()
