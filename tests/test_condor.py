"""Condor synthesis: strict marker parsing, the knowledge tree, the cached pipeline end to end.

The pipeline tests run a scripted generator (well-formed marker replies, with chosen defects) in-process and
behind a real OpenAI-compatible HTTP server, so every row and reason can be asserted exactly; one slow test
runs the embedded SmolLM2 on a two-tag tree.
"""

from __future__ import annotations

import re
import time
from typing import Any

import pytest

from curate.errors import CurateError, InputError
from curate.generation import Completion, Generator
from curate.synthesizers import prompts as P
from curate.synthesizers.condor import CondorConfig, near_duplicates, synth_condor
from curate.synthesizers.tree import (
    dedupe_tags,
    expand,
    interleaved_leaves,
    leaves,
    load_tree,
    parse_tag_list,
    save_tree,
    tree_hash,
    validate_tree,
)

# ================================================================================================ parsing
GOOD_QUESTIONS = """Sure! Here are three questions.
[Easy][Question Start]What is sourdough starter?[Question End]
[Medium][Question Start] How do I keep a starter alive while on holiday for two weeks? [Question End]
[Hard][Question Start]Why does my loaf collapse after a 14-hour cold proof at 4 C?[Question End]
I hope these help!"""


def test_questions_good_output_with_chatter_around_markers():
    p = P.parse_questions(GOOD_QUESTIONS)
    assert p.questions == {
        "easy": "What is sourdough starter?",
        "medium": "How do I keep a starter alive while on holiday for two weeks?",
        "hard": "Why does my loaf collapse after a 14-hour cold proof at 4 C?",
    }
    assert p.reasons == {} and p.form == "tagged"


def test_questions_markers_match_case_and_whitespace_insensitively():
    text = (
        "[ easy ][question  start]A?[QUESTION END][Medium][Question Start]B?[Question End]"
        "[HARD][Question Start]C?[Question End]"
    )
    assert P.parse_questions(text).questions == {"easy": "A?", "medium": "B?", "hard": "C?"}


@pytest.mark.parametrize(
    "text, reason",
    [
        # the 135M model's usual failure: start markers, no end markers
        (
            "[Easy][Question Start]A?\n[Medium][Question Start]B?\n[Hard][Question Start]C?[Question End]",
            "missing_end_marker",
        ),
        ("[Easy][Question Start]A?[Question End][Medium][Question Start]B?", "missing_end_marker"),
        ("[Easy][Question Start]A?[Question End][Question End]", "repeated_marker"),
        ("[Easy][Question Start]A?[Question End][Easy][Question Start]B?[Question End]", "repeated_marker"),
        ("1. A?\n2. B?\n3. C?", "missing_start_marker"),
        ("", "missing_start_marker"),
        # two untagged blocks cannot be placed
        ("[Question Start]A?[Question End][Question Start]B?[Question End]", "missing_difficulty"),
        # a tag that contradicts its position in an otherwise untagged triple
        (
            "[Hard][Question Start]A?[Question End][Question Start]B?[Question End][Question Start]C?[Question End]",
            "missing_difficulty",
        ),
    ],
)
def test_questions_structural_failures_fail_every_difficulty(text, reason):
    p = P.parse_questions(text)
    assert p.questions == {} and p.reasons == dict.fromkeys(P.DIFFICULTIES, reason)


def test_questions_three_untagged_blocks_are_read_in_order():
    p = P.parse_questions(
        "Q:\n[Question Start]A?[Question End]\n[Question Start]B?[Question End]\n"
        "[Question Start]Hard: C?[Question End]"
    )
    assert p.questions == {"easy": "A?", "medium": "B?", "hard": "C?"} and p.form == "ordered"


def test_questions_per_difficulty_failures_keep_the_rest():
    text = (
        "[Easy][Question Start]  [Question End][Hard][Question Start]"
        + P.EXAMPLES["creation"][1][2]
        + "[Question End]"
    )
    p = P.parse_questions(text)
    assert p.questions == {}
    assert p.reasons == {"easy": "empty_question", "medium": "missing_question", "hard": "copied_example"}
    p = P.parse_questions("[Medium][Question Start]B?[Question End] and [Easy][Question Start]A?[Question End]")
    assert p.questions == {"easy": "A?", "medium": "B?"} and p.reasons == {"hard": "missing_question"}


def test_answer_parse():
    assert P.parse_answer("  Bake at 230 C.\n") == ("Bake at 230 C.", None)
    assert P.parse_answer(" \n\t") == (None, "empty_answer")


GOOD_CRITIQUE = """Here is my review.
[Critique Start]
[Strength Start]Clear and short.[Strength End]
[Weakness Start]No oven temperature.[Weakness End]
[Suggestion Start]Give the temperature and time.[Suggestion End]
[Critique End]
Thanks."""


def test_critique_good_and_without_wrapper():
    c, reason, detail = P.parse_critique(GOOD_CRITIQUE)
    block = GOOD_CRITIQUE.split("[Critique Start]")[1].split("[Critique End]")[0].strip()
    assert (c, reason, detail) == (
        P.Critique("Clear and short.", "No oven temperature.", "Give the temperature and time.", block),
        None,
        None,
    )
    inner = GOOD_CRITIQUE.replace("[Critique Start]", "").replace("[Critique End]", "")
    bare = P.parse_critique(inner)[0]
    assert (bare.strength, bare.weakness, bare.suggestion) == (c.strength, c.weakness, c.suggestion)
    assert c.feedback() == (
        "Strengths: Clear and short.\nWeaknesses: No oven temperature.\nSuggestions: Give the temperature and time."
    )


@pytest.mark.parametrize(
    "edit, reason, detail",
    [
        (lambda t: t.replace("[Weakness End]", ""), "malformed_critique", "weakness: missing_end_marker"),
        (lambda t: t.replace("[Critique End]", ""), "malformed_critique", "critique: missing_end_marker"),
        (lambda t: t + "[Critique Start]again[Critique End]", "malformed_critique", "critique: repeated_marker"),
        (
            lambda t: t.replace(
                "[Strength Start]Clear and short.[Strength End]",
                "[Strength Start]Clear.[Strength End][Strength Start]Short.[Strength End]",
            ),
            "malformed_critique",
            "strength: repeated_marker",
        ),
        (
            lambda t: t.replace("[Suggestion Start]Give the temperature and time.[Suggestion End]", ""),
            "malformed_critique",
            "suggestion: missing_start_marker",
        ),
        (lambda t: re.sub(r"(Start\])[^\[]+(\[)", r"\1\2", t), "empty_critique", None),
        (lambda t: re.sub(r"(Start\])[^\[]+(\[)", r"\1...\2", t), "empty_critique", None),
    ],
)
def test_critique_failures(edit, reason, detail):
    assert P.parse_critique(edit(GOOD_CRITIQUE)) == (None, reason, detail)


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "Sure:\n[Improved Answer Start]\nBake at 230 C for 40 minutes.\n[Improved Answer End]\nDone.",
            ("Bake at 230 C for 40 minutes.", None, None),
        ),
        ("[improved answer start]ok[Improved  Answer END]", ("ok", None, None)),
        ("[Improved Answer Start]Bake at 230 C.", (None, "malformed_refined", "missing_end_marker")),
        ("Bake at 230 C.", (None, "malformed_refined", "missing_start_marker")),
        (
            "[Improved Answer Start]a[Improved Answer End][Improved Answer Start]b[Improved Answer End]",
            (None, "malformed_refined", "repeated_marker"),
        ),
        ("[Improved Answer End]a[Improved Answer Start]", (None, "malformed_refined", "misordered_markers")),
        ("[Improved Answer Start] \n [Improved Answer End]", (None, "empty_refined", None)),
        # the format's placeholder copied back (SmolLM2-135M does this)
        ("[Improved Answer Start]...[Improved Answer End]", (None, "empty_refined", None)),
    ],
)
def test_refined_parse(text, expected):
    assert P.parse_refined(text) == expected


def test_prompts_carry_the_parseable_structure():
    msgs = P.question_prompt("Food", "Baking", "Sourdough", "material_processing")
    # a worked example turn, then the real ask; the example reply parses and would be dropped as copied
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    q = msgs[-1]["content"]
    assert "Theme: Sourdough" in q and "Given Material Processing" in q and "Theme: Houseplants" in msgs[0]["content"]
    for marker in ("[Easy][Question Start]", "[Medium][Question Start]", "[Hard][Question Start]", "[Question End]"):
        assert marker in q
    assert P.parse_questions(msgs[1]["content"]).reasons == dict.fromkeys(P.DIFFICULTIES, "copied_example")
    crit = P.critique_prompt("Q?", "A.")
    c = crit[-1]["content"]
    assert "User: Q?\nAssistant: A." in c and "[Weakness Start]" in c and "[Critique End]" in c
    assert P.parse_critique(crit[1]["content"])[0].weakness == P.DEMO_CRITIQUE[1]
    ref = P.refine_prompt("Q?", "A.", P.Critique("s", "w", "g"))
    r = ref[-1]["content"]
    assert "[Question Start]Q?[Question End]\n[Answer Start]A.[Answer End]" in r
    assert "[Feedback Start]Strengths: s\nWeaknesses: w\nSuggestions: g[Feedback End]" in r
    assert P.parse_refined(ref[1]["content"])[0] == P.DEMO_REFINED
    # an unsectioned (lenient) critique is fed back as written
    assert (
        "[Feedback Start]Too short.[Feedback End]"
        in P.refine_prompt("Q?", "A.", P.Critique("", "", "", "Too short."))[-1]["content"]
    )
    assert P.answer_prompt("Q?") == [{"role": "user", "content": "Q?"}]
    assert len(P.TASKS) == 7 and set(P.EXAMPLES) == set(P.TASKS)


def test_lenient_parsing_for_small_models():
    # three closed blocks all tagged Easy (SmolLM2-135M did this): strict refuses, lenient reads them in order
    text = "\n".join(f"[Easy][Question Start]{q}[Question End]" for q in ("A?", "B?", "C?"))
    assert P.parse_questions(text).reasons == dict.fromkeys(P.DIFFICULTIES, "repeated_marker")
    p = P.parse_questions(text, lenient=True)
    assert p.questions == {"easy": "A?", "medium": "B?", "hard": "C?"} and p.form == "ordered"
    # a numbered list of exactly three, only without any question marker
    listed = "Here are three:\n1. Easy: A?\n2. B?\n**3.** C?\nEnjoy."
    assert P.parse_questions(listed, lenient=True).questions == {"easy": "A?", "medium": "B?", "hard": "C?"}
    assert P.parse_questions(listed).reasons["easy"] == "missing_start_marker"
    for bad in ("1. A?\n2. B?\n3. C?\n4. D?", "1. A?\n2. B?", "Question 1:\nA?\n2. B?\n3. C?"):
        assert P.parse_questions(bad, lenient=True).questions == {}, bad
    # unclosed blocks, one per line: two real SmolLM2-135M replies
    smol1 = (
        "[Easy][Question Start]Can you tell me what's in a sourdough bread?\n[Medium][Question End]\n"
        "Why do people believe that soursby is a magic potion?\n[Hard][Question End]"
    )
    smol2 = (
        "[Easy][Question Start]How can I practice chess openings at home?\n"
        "[Medium][Question Start]Do you have a chess club?\n[Hard[Question Start]...[Question End]]"
    )
    assert P.parse_questions(smol1).reasons == dict.fromkeys(P.DIFFICULTIES, "repeated_marker")
    assert P.parse_questions(smol2).reasons == dict.fromkeys(P.DIFFICULTIES, "missing_end_marker")
    p1, p2 = P.parse_questions(smol1, lenient=True), P.parse_questions(smol2, lenient=True)
    assert (p1.form, p1.questions) == ("lines", {"easy": "Can you tell me what's in a sourdough bread?"})
    assert p1.reasons == {"medium": "missing_question", "hard": "missing_question"}
    assert p2.questions == {
        "easy": "How can I practice chess openings at home?",
        "medium": "Do you have a chess club?",
    }
    assert p2.reasons == {"hard": "empty_question"} and p2.form == "lines"
    # no question marker and no 1-2-3 list: nothing to read even leniently
    assert P.parse_questions("Sure, ask me anything!", lenient=True).reasons["easy"] == "missing_start_marker"
    # critiques and rewrites without any marker are taken whole, and say so
    assert P.parse_critique(" Too short. ", lenient=True) == (P.Critique("", "", "", "Too short."), None, "no_markers")
    assert P.parse_critique(" ", lenient=True) == (None, "empty_critique", None)
    # SmolLM2-135M echoed a prompt marker as its whole critique; markers alone are no critique
    assert P.parse_critique("[Dialogue End]", lenient=True) == (None, "empty_critique", None)
    assert P.parse_critique("[Dialogue End]\nToo short.", lenient=True)[0].text == "Too short."
    assert P.parse_critique("[Strength Start]ok", lenient=True)[1] == "malformed_critique"
    assert P.parse_refined("Better.", lenient=True) == ("Better.", None, "no_markers")
    assert P.parse_refined("[Improved Answer Start]Better.", lenient=True)[1:] == (
        "malformed_refined",
        "missing_end_marker",
    )


# ================================================================================================ tree
def test_builtin_tree_shape_and_unique_leaves():
    tree = load_tree("builtin")
    assert len(tree) == 12 and all(len(topics) == 3 for topics in tree.values())
    paths = leaves(tree)
    assert len(paths) == 108 and len(set(paths)) == 108
    assert paths[0] == ("Health and Wellbeing", "Nutrition", "Meal Planning on a Budget")
    # the interleaved order visits every domain before any domain's second tag
    assert {p[0] for p in interleaved_leaves(tree)[:12]} == set(tree)
    assert sorted(interleaved_leaves(tree)) == sorted(paths)


def test_tree_yaml_round_trip_dedupe_and_hash(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("Food:\n  Baking: ['Sourdough  Bread', 'sourdough bread', ' Pies ']\n  Grilling: [Steak]\n")
    tree = load_tree(path)
    assert tree == {"Food": {"Baking": ["Sourdough Bread", "Pies"], "Grilling": ["Steak"]}}
    save_tree(tree, tmp_path / "u.yaml")
    assert load_tree(tmp_path / "u.yaml") == tree
    assert tree_hash(tree) == tree_hash(load_tree(tmp_path / "u.yaml"))
    assert tree_hash(tree) != tree_hash({"Food": {"Baking": ["Pies", "Sourdough Bread"], "Grilling": ["Steak"]}})
    assert dedupe_tags(["A  b", "a B", "", "C"], existing=["c"]) == ["A b"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("[1, 2]", "expected a non-empty mapping"),
        ("Food: [a, b]", "domain 'Food': expected a non-empty mapping of topic"),
        ("Food:\n  Baking: []", "Food > Baking: expected a non-empty list of tags"),
        ("Food:\n  Baking: [a, 3]", "Food > Baking: tag 1: expected a non-empty string"),
        ("Food: {Baking: [a]\n", "not valid YAML"),
    ],
)
def test_tree_errors_name_the_file_and_path(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)) as e:
        load_tree(path)
    assert str(path) in str(e.value)
    with pytest.raises(InputError, match="cannot read"):
        load_tree(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "reply, expected",
    [
        ('["Rye Bread", "Focaccia"]', (["Rye Bread", "Focaccia"], None)),
        ("Here you go: ['Rye Bread', 'Focaccia'] enjoy", (["Rye Bread", "Focaccia"], None)),
        ("- Rye Bread\n- Focaccia", (None, "no_list")),
        ('["a"] and ["b"]', (None, "repeated_list")),
        ("[Rye Bread, Focaccia]", (None, "malformed_list")),
        ("[1, 2]", (None, "malformed_list")),
        ('["", " "]', (None, "empty_list")),
    ],
)
def test_parse_tag_list(reply, expected):
    assert parse_tag_list(reply) == expected


def test_expand_adds_new_tags_only_and_counts_failures():
    tree = validate_tree({"Food": {"Baking": ["Pies"], "Grilling": ["Steak"]}})
    seen: list[str] = []

    def complete(prompts):
        seen.extend(p[0]["content"] for p in prompts)
        return ['["pies", "Rye Bread", "Focaccia", "Scones"]', "I like grilling."]

    grown, report = expand(tree, complete, max_new=2)
    assert grown == {"Food": {"Baking": ["Pies", "Rye Bread", "Focaccia"], "Grilling": ["Steak"]}}
    assert report == {"topics": 2, "added": 2, "failed": {"no_list": 1}}
    assert "Food > Baking" in seen[0] and '["Pies"]' in seen[0]
    assert tree == {"Food": {"Baking": ["Pies"], "Grilling": ["Steak"]}}  # the input is not mutated


# ================================================================================================ config
@pytest.mark.parametrize(
    "kwargs, flag",
    [
        ({"tasks": ("daily_chat", "poetry")}, "--tasks"),
        ({"tasks": ()}, "--tasks"),
        ({"difficulties": ("easy", "extreme")}, "--difficulties"),
        ({"per_tag": 0}, "--per-tag"),
        ({"limit": 0}, "--limit"),
        ({"dedup_threshold": 0.0}, "--dedup-threshold"),
        ({"dedup_threshold": 1.5}, "--dedup-threshold"),
        ({"temperature": -1.0}, "--temperature"),
        ({"max_tokens": 0}, "--max-tokens"),
        ({"backend": "tgi"}, "--backend"),
        ({"base_url": "http://x/v1"}, "--base-url"),
    ],
)
def test_config_checks_name_the_flag(kwargs, flag):
    with pytest.raises(CurateError, match=re.escape(flag)):
        CondorConfig(**kwargs)


def test_config_accepts_comma_strings_and_unknown_override_fails(store):
    c = CondorConfig(tasks="daily_chat, creation", difficulties="Hard,easy")
    assert c.tasks == ("daily_chat", "creation") and c.difficulties == ("hard", "easy")
    with pytest.raises(CurateError, match="unknown option.*temprature"):
        synth_condor(name="x", store=store, temprature=0.5)
    assert store.datasets() == []


# ================================================================================================ pipeline
EASY = "What is {tag}, in one sentence?"
MEDIUM = "How should a complete beginner get started with {tag} this month on a small budget?"
HARD = "My grandmother insists that {tag} was done differently in 1950; what changed since then, and why?"


class ScriptedGenerator(Generator):
    """Recognises which Condor prompt it got and replies in well-formed markers, with chosen defects.

    ``defects`` maps a tag (question stage) or a question (later stages) to a reply that replaces the good one.
    """

    backend = "scripted"

    def __init__(self, defects: dict[tuple[str, str], str] | None = None, fail_stage: str | None = None):
        self.defects = defects or {}
        self.fail_stage = fail_stage
        self.calls: list[tuple[str, int]] = []  # (stage, prompts) per generate call

    def identity(self) -> dict[str, Any]:
        return {"backend": "scripted", "model": "script-v1"}

    @staticmethod
    def stage(text: str) -> str:
        if "[Improved Answer Start]" in text:
            return "refine"
        if "[Critique Start]" in text:
            return "critique"
        if "[Question Start]" in text:
            return "question"
        if "Python list of strings" in text:
            return "expand"
        return "answer"

    def reply(self, text: str) -> tuple[str, str]:
        stage = self.stage(text)
        if stage == "question":
            tag = re.search(r"^Theme: (.+)$", text, re.M).group(1)
            key = tag
            out = (
                f"Here you go.\n[Easy][Question Start]{EASY.format(tag=tag)}[Question End]\n"
                f"[Medium][Question Start]{MEDIUM.format(tag=tag)}[Question End]\n"
                f"[Hard][Question Start]{HARD.format(tag=tag)}[Question End]"
            )
        elif stage == "expand":
            key = re.search(r"subjects: (.+) > (.+)\.$", text, re.M).group(2)
            out = '["Rye Bread", "sourdough  bread"]' if key == "Baking" else "I cannot think of any."
        elif stage == "answer":
            key, out = text, f"Answer: {text}"
        elif stage == "critique":
            key = re.search(r"^User: (.+)$", text, re.M).group(1)
            out = (
                "[Critique Start][Strength Start]Friendly.[Strength End][Weakness Start]Vague.[Weakness End]"
                "[Suggestion Start]Add one concrete example.[Suggestion End][Critique End]"
            )
        else:
            key = re.search(r"\[Question Start\](.+?)\[Question End\]", text).group(1)
            out = f"[Improved Answer Start]Improved: {key}[Improved Answer End]"
        return stage, self.defects.get((stage, key), out)

    def generate(self, prompts, *, n, sampling):
        stages = {self.stage(p[-1]["content"]) for p in prompts}
        self.calls.append((",".join(sorted(stages)), len(prompts)))
        if self.fail_stage in stages:
            raise RuntimeError(f"killed during {self.fail_stage}")
        out = []
        for p in prompts:
            _, text = self.reply(p[-1]["content"])
            out.append([Completion(text, len(text.split()), "stop", 10)] * n)
        self.completions_generated += len(prompts) * n
        return out


TWO_TAGS = {"Food and Cooking": {"Baking": ["Sourdough Bread"]}, "Hobbies and Sports": {"Games": ["Chess Openings"]}}
SOUR, CHESS = ("Food and Cooking", "Baking", "Sourdough Bread"), ("Hobbies and Sports", "Games", "Chess Openings")


@pytest.fixture
def tree_file(tmp_path):
    return str(save_tree(TWO_TAGS, tmp_path / "two.yaml"))


@pytest.fixture
def scripted(monkeypatch):
    """Route ``make_generator`` to a scripted generator (set ``holder[0]`` to swap it between runs)."""
    import curate.generation

    holder = [ScriptedGenerator()]
    monkeypatch.setattr(curate.generation, "make_generator", lambda backend, model, **kw: holder[0])
    return holder


def test_pipeline_drops_malformed_outputs_with_reasons(store, tree_file, scripted):
    defects = {
        ("question", "Chess Openings"): "[Easy][Question Start]x?[Question End][Medium][Question Start]y?",
        ("answer", EASY.format(tag="Sourdough Bread")): "   ",
        ("critique", MEDIUM.format(tag="Sourdough Bread")): "[Strength Start]ok[Strength End] and that is all",
        ("refine", HARD.format(tag="Sourdough Bread")): "[Improved Answer Start]",
    }
    scripted[0] = ScriptedGenerator(defects)
    v = synth_condor(name="cd", store=store, tree=tree_file, tasks=("domain_qa",))
    assert len(v) == 0
    dec = v.decisions().to_pylist()
    assert [
        (d["tag_path"][2], d["difficulty"], d["kept"], d["score"], d["stage"], d["reason"], d["detail"]) for d in dec
    ] == [
        ("Sourdough Bread", "easy", False, 0.0, "answer", "empty_answer", None),
        ("Sourdough Bread", "medium", False, 0.0, "critique", "malformed_critique", "weakness: missing_start_marker"),
        ("Sourdough Bread", "hard", False, 0.0, "refine", "malformed_refined", "missing_end_marker"),
        ("Chess Openings", "easy", False, 0.0, "question", "missing_end_marker", None),
        ("Chess Openings", "medium", False, 0.0, "question", "missing_end_marker", None),
        ("Chess Openings", "hard", False, 0.0, "question", "missing_end_marker", None),
    ]
    stats = v.manifest["stats"]
    assert stats["reasons"] == {
        "empty_answer": 1,
        "malformed_critique": 1,
        "malformed_refined": 1,
        "missing_end_marker": 3,
    }
    assert stats["kept_per_difficulty"] == {"easy": 0, "medium": 0, "hard": 0}
    # a failed critique or answer is not sent on: 3 answers, 2 critiques, 1 refine
    assert [stats["llm"][s]["prompts"] for s in ("questions", "answers", "critiques", "refines")] == [2, 3, 2, 1]


def test_pipeline_rows_and_every_call_cached(store, tree_file, scripted):
    # batch_size 2: several generate calls (and cache shards) per stage
    v = synth_condor(name="cd", store=store, tree=tree_file, tasks=("creation",), batch_size=2)
    rows = v.to_pylist()
    assert [(r["tag_path"], r["task"], r["difficulty"], r["round"]) for r in rows] == [
        (list(path), "creation", d, 0) for path in (SOUR, CHESS) for d in P.DIFFICULTIES
    ]
    q = EASY.format(tag="Sourdough Bread")
    assert rows[0]["question"] == q
    assert rows[0]["response_void"] == f"Answer: {q}"
    assert rows[0]["critique"] == {
        "strength": "Friendly.",
        "weakness": "Vague.",
        "suggestion": "Add one concrete example.",
        "text": "[Strength Start]Friendly.[Strength End][Weakness Start]Vague.[Weakness End]"
        "[Suggestion Start]Add one concrete example.[Suggestion End]",
    }
    assert rows[0]["response_refined"] == f"Improved: {q}"
    assert rows[0]["messages"] == [{"role": "user", "content": q}, {"role": "assistant", "content": f"Improved: {q}"}]
    assert rows[0]["prompt"] == [{"role": "user", "content": q}] and rows[0]["data_source"] == "condor"
    assert len({r["id"] for r in rows}) == 6
    assert v.decisions().column("reason").to_pylist() == [""] * 6
    stats = v.manifest["stats"]
    assert stats["kept_per_task"] == {"creation": 6}
    assert stats["kept_per_difficulty"] == {"easy": 2, "medium": 2, "hard": 2}
    assert stats["llm"]["answers"] == {"prompts": 6, "cached": 0, "generated": 6, "truncated": 0}
    assert [c for c in scripted[0].calls if c[0] == "answer"] == [("answer", 2)] * 3
    synth = v.manifest["synth"]
    assert synth["tree_hash"] == tree_hash(TWO_TAGS) and synth["prompts_hash"] == P.prompts_hash()
    assert synth["model_identity"] == {"backend": "scripted", "model": "script-v1"}

    # the same recipe under another name: rebuilt entirely from the LLM cache, not one generate call
    calls = len(scripted[0].calls)
    other = synth_condor(name="cd-copy", store=store, tree=tree_file, tasks=("creation",), batch_size=2)
    assert len(scripted[0].calls) == calls and other.to_pylist() == rows
    llm = other.manifest["stats"]["llm"]
    assert all(st["generated"] == 0 and st["cached"] == st["prompts"] for st in llm.values())
    # the same recipe and name: the committed version comes back (batch size is not part of the recipe)
    assert synth_condor(name="cd", store=store, tree=tree_file, tasks=("creation",)).id == v.id
    # --no-refine keeps the void answer, and its calls are all cached too
    nv = synth_condor(name="cd-void", store=store, tree=tree_file, tasks=("creation",), refine=False)
    assert nv.id != v.id and len(scripted[0].calls) == calls
    r0 = nv.to_pylist()[0]
    assert r0["messages"][1]["content"] == f"Answer: {q}" and r0["critique"] is None and r0["response_refined"] is None
    # only the difficulties asked for become candidates
    hard = synth_condor(name="cd-hard", store=store, tree=tree_file, tasks=("creation",), difficulties=("hard",))
    assert [r["difficulty"] for r in hard.to_pylist()] == ["hard", "hard"] and len(hard.decisions()) == 2


def test_killed_run_resumes_from_the_llm_cache(store, tree_file, scripted):
    scripted[0] = ScriptedGenerator(fail_stage="critique")
    with pytest.raises(RuntimeError, match="killed during critique"):
        synth_condor(name="cd", store=store, tree=tree_file, tasks=("daily_chat",), batch_size=2)
    assert store.datasets() == []  # nothing committed
    scripted[0] = ScriptedGenerator()
    v = synth_condor(name="cd", store=store, tree=tree_file, tasks=("daily_chat",), batch_size=2)
    llm = v.manifest["stats"]["llm"]
    assert llm["questions"]["generated"] == 0 and llm["answers"]["generated"] == 0
    assert llm["critiques"]["generated"] == 6 and llm["refines"]["generated"] == 6
    assert {s for s, _ in scripted[0].calls} == {"critique", "refine"}
    assert len(v) == 6


def test_per_tag_rounds_and_near_duplicates(store, tree_file, scripted):
    # the scripted model answers both samples of a prompt alike: round 1 repeats round 0 word for word
    v = synth_condor(name="cd", store=store, tree=tree_file, tasks=("opinion",), per_tag=2, limit=1)
    dec = v.decisions().to_pylist()
    assert [(d["round"], d["reason"]) for d in dec] == [(0, "")] * 3 + [(1, "near_duplicate")] * 3
    kept_ids = [d["id"] for d in dec[:3]]
    assert [d["detail"] for d in dec[3:]] == kept_ids
    assert len(v) == 3 and v.manifest["stats"]["tag_paths"] == 1


def test_expand_grows_the_tree_before_synthesis(store, tree_file, scripted):
    # threshold 0.99: "Rye Bread" and "Sourdough Bread" questions share a template and must not collapse here
    kw = dict(store=store, tree=tree_file, tasks=("opinion",), difficulties=("hard",), dedup_threshold=0.99)
    v = synth_condor(name="cd", expand=True, **kw)
    assert [r["tag_path"] for r in v.to_pylist()] == [
        list(SOUR),
        list(CHESS),
        ["Food and Cooking", "Baking", "Rye Bread"],
    ]
    stats = v.manifest["stats"]
    assert stats["expand"] == {"topics": 2, "added": 1, "failed": {"no_list": 1}}
    assert stats["llm"]["expand"]["prompts"] == 2
    synth = v.manifest["synth"]
    assert synth["tree_hash"] == tree_hash(TWO_TAGS)
    grown = {**TWO_TAGS, "Food and Cooking": {"Baking": ["Sourdough Bread", "Rye Bread"]}}
    assert synth["expanded_tree_hash"] == tree_hash(grown)
    assert synth_condor(name="cd", **kw).id != v.id  # expansion is part of the recipe


def test_near_duplicates_threshold():
    texts = [
        "How do I bake sourdough bread at home?",
        "How do I bake sourdough bread at home?",
        "How can I bake sourdough bread at home?",
        "Which chess opening suits a beginner?",
    ]
    assert near_duplicates(texts, 0.9) == [None, 0, 0, None]
    assert near_duplicates(texts, 1.0) == [None, 0, None, None]
    assert near_duplicates(texts[:1], 0.9) == [None]


def test_openai_backend_against_a_local_server(store, tree_file):
    from curate.synthesizers.condor import synth_condor as run
    from tests.openai_server import OpenAIServer

    empty = "[Improved Answer Start] [Improved Answer End]"
    gen = ScriptedGenerator({("refine", MEDIUM.format(tag="Chess Openings")): empty})
    with OpenAIServer(gen) as server:
        kw = {
            "store": store,
            "tree": tree_file,
            "tasks": ("role_playing",),
            "backend": "openai",
            "base_url": server.base_url,
            "model": "scripted-7b",
            "temperature": 0.0,
            "max_tokens": 64,
        }
        v = run(name="cd", **kw)
        n_requests = len(server.requests)
        assert n_requests == 2 + 6 + 6 + 6  # questions, answers, critiques, refines
        body = server.requests[0]
        assert body["model"] == "scripted-7b" and body["temperature"] == 0.0 and body["max_tokens"] == 64
        again = run(name="cd-again", **kw)
        assert len(server.requests) == n_requests  # every call came from the cache
    rows = v.to_pylist()
    assert [(tuple(r["tag_path"]), r["difficulty"]) for r in rows] == [
        (SOUR, "easy"),
        (SOUR, "medium"),
        (SOUR, "hard"),
        (CHESS, "easy"),
        (CHESS, "hard"),
    ]
    for r in rows:
        tag = r["tag_path"][2]
        q = {"easy": EASY, "medium": MEDIUM, "hard": HARD}[r["difficulty"]].format(tag=tag)
        assert r["question"] == q and r["response_void"] == f"Answer: {q}"
        assert r["response_refined"] == f"Improved: {q}"
        assert r["messages"] == [{"role": "user", "content": q}, {"role": "assistant", "content": f"Improved: {q}"}]
    dec = v.decisions().to_pylist()
    assert [d["reason"] for d in dec] == ["", "", "", "", "empty_refined", ""]
    assert [d["kept"] for d in dec] == [True, True, True, True, False, True]
    assert [d["score"] for d in dec] == [1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert v.manifest["synth"]["model_identity"]["model"] == "scripted-7b"
    assert again.to_pylist() == rows and again.id == v.id


def test_output_feeds_selection_and_sft_training(store, tree_file, scripted, tiny_model_path, tmp_path, monkeypatch):
    v = synth_condor(name="cd", store=store, tree=tree_file, tasks=("daily_chat",))
    rows = v.to_pylist()
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    for r in rows:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"]
        assert all(m["content"].strip() for m in r["messages"])
    fisher = pytest.importorskip("curate.selectors.fisher")
    pytest.importorskip("curate.train.sft")
    import curate
    import curate.selectors
    from curate.train import sft

    if "fisher" not in curate.selectors.SELECTORS:  # registered by the lead; the class is what is under test
        monkeypatch.setitem(curate.selectors.SELECTORS, "fisher", fisher.FisherSelector)
    # budget 3 of 6 rows, tiny random model: the point is the hand-off, not the choice
    picked = curate.select(v.ref, method="fisher", name="cd-fisher", store=store, budget=3, model=tiny_model_path)
    assert len(picked) == 3 and set(picked.to_polars()["id"]) <= {r["id"] for r in rows}
    result = sft(
        picked.ref,
        store=store,
        model=tiny_model_path,
        out=str(tmp_path / "ckpt"),
        max_steps=2,
        batch_size=2,
        max_len=256,
    )
    assert result.steps == 2 and (tmp_path / "ckpt" / "config.json").exists()


# ================================================================================================ SmolLM2
@pytest.mark.slow
def test_smollm2_end_to_end_and_rerun_from_cache(store, tree_file, monkeypatch):
    import curate.generation

    # 2 tags x 1 task, 96 new tokens per call: the smallest run that still exercises every stage. SmolLM2-135M
    # rarely closes its markers, so the run is lenient; strict parsing of the same replies is checked after.
    kw = dict(store=store, tree=tree_file, tasks=("daily_chat",), max_tokens=96, lenient=True)
    t0 = time.perf_counter()
    v = synth_condor(name="smol", **kw)
    first = time.perf_counter() - t0
    stats = v.manifest["stats"]
    dec = v.decisions().to_pylist()
    assert len(dec) == 6 and stats["candidates"] == 6 and stats["llm"]["questions"]["generated"] == 2
    assert all(d["kept"] == (d["reason"] == "") for d in dec)
    assert stats["kept"] + sum(stats["reasons"].values()) == 6 == len(v) + sum(not d["kept"] for d in dec)
    for r in v.to_pylist():
        assert r["messages"] == [
            {"role": "user", "content": r["question"]},
            {"role": "assistant", "content": r["response_refined"]},
        ]

    def no_generation(*a, **k):
        raise AssertionError("generate called on a cached run")

    monkeypatch.setattr(curate.generation.HFGenerator, "generate", no_generation)
    t0 = time.perf_counter()
    again = synth_condor(name="smol-again", **kw)
    assert time.perf_counter() - t0 < 15
    assert again.to_pylist() == v.to_pylist()
    assert all(st["generated"] == 0 for st in again.manifest["stats"]["llm"].values())
    # Condor Void reuses the cached questions and answers: a row for every question that parsed
    void = synth_condor(name="smol-void", refine=False, **kw)
    answered = sum(d["stage"] not in ("question", "dedup", "answer") for d in dec)
    assert len(void) == answered >= 1
    assert all(r["messages"][1]["content"] == r["response_void"] for r in void.to_pylist())
    # strict parsing keeps a subset of the lenient questions, so it too runs from the cache alone
    strict = synth_condor(name="smol-strict", **{**kw, "lenient": False})
    assert len(strict) <= len(v)
    print(f"\nsmollm2 condor: first run {first:.1f}s\nlenient {stats}\nstrict {strict.manifest['stats']}")
