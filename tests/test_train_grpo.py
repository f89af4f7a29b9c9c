"""curate train grpo: reward rises on a learnable toy task, the clipped loss and advantages on golden inputs, the
PODS / DAPO / curriculum switches and their kept fractions, KL, and exact resume."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

import curate
import curate.train
from curate.errors import CurateError
from curate.train import GRPOConfig
from curate.train.data import load_state

grpo_mod = importlib.import_module("curate.train.grpo")  # `curate.train.grpo` is the function, not the module


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py; the slow tests here too


def digit_reward(completion: str, answer: str, **row) -> float:
    # Partial credit for any digit: a random tiny model emits the exact digit with chance ~1/259 per sample,
    # too rare for a signal; digits as a class (~4%) show up in the first steps.
    first = completion[:1]
    return 1.0 if first == answer else (0.3 if first.isdigit() else 0.0)


def zero_reward(completion: str, answer: str, **row) -> float:
    return 0.0


@pytest.fixture
def digits(store):
    rows = [{"id": f"d{d}", "prompt": [{"role": "user", "content": str(d)}], "answer": str(d)} for d in range(10)]
    curate.save(rows, name="digits", store=store)
    return store


def run(store, tmp_path, name: str, model: str, **kw):
    # Tiny settings: 2 new tokens (the reward reads the first character), 4 prompts x 8 samples per step.
    base = dict(model=model, reward=digit_reward, n=8, prompts_per_step=4, max_new_tokens=2, lr=3e-3, steps=3)
    result = curate.train.grpo("digits", store=store, out=str(tmp_path / name), **{**base, **kw})
    return result, [r for r in curate.train.read_metrics(result.out) if "reward_mean" in r]


def params(path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(path).state_dict().items()}


def test_grpo_raises_mean_reward(digits, tiny_model_path, tmp_path):
    # 100 steps at lr 3e-3: the tiny model learns to answer with a digit (and sometimes the right one) in ~5 s.
    _, logs = run(digits, tmp_path, "learn", tiny_model_path, steps=100, seed=0)
    rewards = [r["reward_mean"] for r in logs]
    assert len(rewards) == 100
    first, last = np.mean(rewards[:20]), np.mean(rewards[-20:])
    assert last > first + 0.15, (first, last)
    assert all(r["kept_fraction"] == 1.0 and sum(r["pass_rate_hist"]) == 4 for r in logs)


def test_select_rollouts_and_histogram_golden():
    idx, adv = grpo_mod.select_rollouts(np.array([0.0, 1.0, 0.0, 1.0]), downsample=None, drop_zero_variance=False)
    assert idx.tolist() == [0, 1, 2, 3]
    a = 0.5 / (np.sqrt(1 / 3) + 1e-4)  # mean .5, sample std sqrt(1/3) (ddof=1, TRL's): +-0.8659
    assert adv.tolist() == [-a, a, -a, a] and round(a, 4) == 0.8659
    _, adv = grpo_mod.select_rollouts(
        np.array([0.0, 1.0, 0.0, 1.0]), downsample=None, drop_zero_variance=False, ddof=0
    )
    assert np.allclose(adv, np.array([-1, 1, -1, 1]) * 0.5 / 0.5001)  # population std .5: +-0.9998
    # PODS keeps the max-variance pair: the lowest and the highest reward; sample std of [0.9, 0.0] is 0.45 sqrt(2).
    idx, adv = grpo_mod.select_rollouts(np.array([0.2, 0.9, 0.5, 0.0]), downsample=2, drop_zero_variance=False)
    s = 0.45 * np.sqrt(2) + 1e-4
    assert idx.tolist() == [1, 3] and np.allclose(adv, [0.45 / s, -0.45 / s])
    assert grpo_mod.select_rollouts(np.ones(4), downsample=None, drop_zero_variance=True) is None
    _, adv = grpo_mod.select_rollouts(np.ones(4), downsample=None, drop_zero_variance=False)
    assert np.all(adv == 0)
    # DAPO's metric: all correct (> 0.5) is dropped under acc even when a format bonus makes the rewards differ.
    graded = np.array([1.0, 1.2, 1.1, 1.0])
    assert grpo_mod.select_rollouts(graded, downsample=None, drop_zero_variance=True) is None
    idx, adv = grpo_mod.select_rollouts(graded, downsample=None, drop_zero_variance=True, metric="score")
    assert idx.tolist() == [0, 1, 2, 3] and np.allclose(adv, (graded - 1.075) / (graded.std(ddof=1) + 1e-4))
    near = np.array([0.3, 0.3 + 2e-7])  # population std 1e-7
    assert grpo_mod.select_rollouts(near, downsample=None, drop_zero_variance=True, metric="score") is None
    kept = grpo_mod.select_rollouts(near, downsample=None, drop_zero_variance=True, metric="score", tolerance=1e-8)
    assert kept is not None and kept[0].tolist() == [0, 1]
    groups = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [2, 1, 1, 1]])
    hist = grpo_mod.pass_rate_histogram(groups)
    assert hist == [1, 1, 1, 1, 1]  # rates 0, .25, .5, .75, 1 (a reward of 2 clips to 1)


def test_policy_loss_clips_and_reduces_to_reinforce_at_ratio_one():
    old = torch.zeros(4)
    logp = torch.log(torch.tensor([1.5, 1.5, 1.1, 0.5])).requires_grad_()
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0])
    loss, kl, clipped = grpo_mod.policy_loss(logp, old, adv, clip_eps=0.2)
    assert torch.allclose(loss, torch.tensor([-1.2, 1.5, -1.1, 0.8]))
    loss.sum().backward()
    # Clipped where the ratio left [0.8, 1.2] in the direction the advantage pushes: no gradient there.
    assert torch.allclose(logp.grad, torch.tensor([0.0, 1.5, -1.1, 0.0]))
    assert clipped.tolist() == [True, True, False, True] and kl is None

    logp = torch.tensor([-0.3, -2.0]).requires_grad_()
    loss, _, _ = grpo_mod.policy_loss(logp, logp.detach(), torch.tensor([0.7, -0.4]), clip_eps=0.2)
    loss.sum().backward()
    assert torch.allclose(logp.grad, torch.tensor([-0.7, 0.4]))  # ratio 1: exactly -A * grad log p

    ref = torch.tensor([-0.5, -2.0])
    loss, kl, _ = grpo_mod.policy_loss(
        torch.tensor([-0.3, -2.0]), torch.tensor([-0.3, -2.0]), torch.zeros(2), clip_eps=0.2, ref_logp=ref, beta=0.5
    )
    d = -0.2
    assert torch.allclose(kl, torch.tensor([np.exp(d) - d - 1, 0.0], dtype=torch.float32))
    assert torch.allclose(loss, 0.5 * kl)


def test_downsample_drop_zero_variance_and_curriculum_log_kept_fraction(digits, tiny_model_path, tmp_path):
    _, logs = run(digits, tmp_path, "pods", tiny_model_path, downsample=4)
    assert [r["kept_fraction"] for r in logs] == [0.5, 0.5, 0.5]
    assert all(r["kept_rollouts"] == 16 for r in logs)

    # All rewards equal: DAPO drops every group, nothing is updated, the weights stay put.
    result, logs = run(digits, tmp_path, "dapo0", tiny_model_path, reward=zero_reward, drop_zero_variance=True)
    assert [r["kept_fraction"] for r in logs] == [0.0, 0.0, 0.0] and all(r["loss"] is None for r in logs)
    before, after = params(tiny_model_path), params(result.out)
    assert all(torch.equal(before[k], after[k]) for k in before)

    # Mixed rewards: the kept fraction is the share of groups whose rewards differ, in whole groups of n.
    # metric=score: the digit reward's partial credit (0.3) is "wrong" under acc, and exact digits are too rare here.
    _, logs = run(
        digits, tmp_path, "dapo", tiny_model_path, drop_zero_variance=True, metric="score", steps=30, lr=1e-2
    )
    for r in logs:
        assert r["kept_rollouts"] % 8 == 0 and r["kept_fraction"] == r["kept_rollouts"] / 32
    assert any(0 < r["kept_fraction"] < 1 for r in logs)

    result, logs = run(
        digits,
        tmp_path,
        "online",
        tiny_model_path,
        curriculum="online",
        downsample=4,
        drop_zero_variance=True,
        save_every=3,
    )
    assert len(logs) == 3 and all(r["kept_fraction"] <= 0.5 for r in logs)
    state = load_state(result.checkpoint)
    # Every generated reward reaches the sampler's posteriors (before any drop): Beta(1, 1) priors on 10 prompts
    # plus 3 steps x 4 prompts x 8 rewards.
    assert sum(state["sampler"]["alpha"]) + sum(state["sampler"]["beta"]) == pytest.approx(2 * 10 + 3 * 4 * 8)


def test_kl_to_reference_and_ppo_epochs(digits, tiny_model_path, tmp_path):
    _, logs = run(digits, tmp_path, "kl", tiny_model_path, beta=0.1, ppo_epochs=2, minibatches=2, lr=1e-2)
    assert all(r["updates"] == 4 and r["kl"] is not None and r["kl"] >= 0 for r in logs)
    assert logs[-1]["kl"] > 0  # the policy has moved away from the frozen reference
    assert any(r["clip_frac"] > 0 for r in logs)  # later minibatches see ratios outside [0.8, 1.2]
    _, logs = run(digits, tmp_path, "nokl", tiny_model_path, steps=1)
    assert logs[0]["kl"] is None and logs[0]["clip_frac"] == 0.0


def test_resume_matches_uninterrupted_run(digits, tiny_model_path, tmp_path):
    import shutil

    kw = dict(steps=6, save_every=3, curriculum="online", ppo_epochs=2, seed=1)
    full, _ = run(digits, tmp_path, "full", tiny_model_path, **kw)
    shutil.copytree(full.out / "checkpoint-000003", tmp_path / "resumed" / "checkpoint-000003")
    resumed, logs = run(digits, tmp_path, "resumed", tiny_model_path, resume=True, **kw)
    assert [r["step"] for r in logs] == [4, 5, 6]
    a, b = params(full.out), params(resumed.out)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_version_or_rows_train_exactly_like_the_ref(digits, tiny_model_path, tmp_path):
    import json

    version = curate.load("digits", store=digits)
    by_ref, _ = run(digits, tmp_path, "ref", tiny_model_path, steps=2)
    base = dict(model=tiny_model_path, reward=digit_reward, n=8, prompts_per_step=4, max_new_tokens=2, lr=3e-3)
    for tag, data in (("version", version), ("rows", version.to_pylist())):
        curate.train.grpo(data, store=digits, out=str(tmp_path / tag), steps=2, **base)
    a = params(by_ref.out)
    for tag in ("version", "rows"):
        assert all(torch.equal(a[k], w) for k, w in params(tmp_path / tag).items()), tag
    info = {t: json.loads((tmp_path / t / "curate_train.json").read_text()) for t in ("ref", "version", "rows")}
    assert (
        info["ref"]["dataset"]
        == info["version"]["dataset"]
        == {"ref": "digits@v1", "name": "digits", "id": version.id}
    )
    assert info["rows"]["dataset"]["ref"] == "rows" and info["rows"]["dataset"]["name"] is None


def test_bad_config_names_the_flag(digits, tiny_model_path, tmp_path):
    with pytest.raises(CurateError, match="--downsample"):
        GRPOConfig(n=8, downsample=1)
    with pytest.raises(CurateError, match="--downsample"):
        GRPOConfig(n=4, downsample=8)
    with pytest.raises(CurateError, match="--curriculum"):
        GRPOConfig(curriculum="hardest-first")
    with pytest.raises(CurateError, match="--n must be >= 2"):
        GRPOConfig(n=1)
    with pytest.raises(CurateError, match="--ddof must be 0 or 1"):
        GRPOConfig(ddof=2)
    with pytest.raises(CurateError, match="--metric must be one of acc, score"):
        GRPOConfig(metric="reward")
    with pytest.raises(CurateError, match="--tolerance must be >= 0"):
        GRPOConfig(tolerance=-1.0)
    assert (GRPOConfig().ddof, GRPOConfig().metric, GRPOConfig().tolerance) == (1, "acc", 1e-6)
    curate.save([{"id": "x", "answer": "1"}], name="noprompt", store=digits)
    with pytest.raises(CurateError, match="needs a 'prompt'"):
        curate.train.grpo(
            "noprompt", model=tiny_model_path, reward=digit_reward, store=digits, out=str(tmp_path / "bad")
        )
