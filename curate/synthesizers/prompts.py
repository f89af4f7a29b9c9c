"""Condor prompts and the strict parsers for their bracket-marked replies.

Condor (Cao et al., ACL 2025, arXiv 2501.12273, §3.2.2-3.3 and the appendix prompts) asks one model to (1) write
three questions of rising difficulty for a tag and a task type, (2) answer each question, (3) critique its own
answer and (4) rewrite the answer from that critique. The wording below is ours; the structure is the paper's:
the bracket markers (``[Easy][Question Start]...[Question End]``, ``[Critique Start][Strength Start]...``,
``[Improved Answer Start]...[Improved Answer End]``) that make each reply machine-readable.

Parsing is strict about structure and tolerant about chatter: text outside the markers is ignored, markers match
case-insensitively with any inner whitespace, but a start marker without its end marker, a repeated marker or an
empty block is a failure with a reason (``missing_end_marker``, ``repeated_marker``, ``empty_question`` ...).
Two tolerances are always on, both still structural: three untagged question blocks are read as Easy, Medium,
Hard in order, and a critique whose three inner sections are intact may omit the outer
``[Critique Start]``/``[Critique End]`` wrapper. ``lenient=True`` (``--lenient``, for small models that ignore
markers) adds three more: three well-formed question blocks are read in order whatever their tags (or, with no
question marker at all, a numbered list of exactly three lines), and a critique or a rewrite with no marker at all
is taken whole (detail ``no_markers``; the pipeline then drops it as ``truncated`` if it hit ``--max-tokens``).
A marker that is present must still be well-formed.

Departures from the paper: no domain-specific few-shot "[example list]" (curate has no seed questions per
domain); instead every prompt carries one worked example as an earlier chat turn (one per task type for the
question prompt), and a question that copies its example is dropped (``copied_example``).

    curate synth condor --name OUT
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field


def normalise_tag(tag: str) -> str:
    """The key two tags are compared by: whitespace collapsed, case folded.

    >>> normalise_tag("  Online   dating ") == normalise_tag("online Dating")
    True
    """
    return " ".join(tag.split()).casefold()


DIFFICULTIES = ("easy", "medium", "hard")

# name -> (title, what the user wants). Titles follow the paper's appendix; descriptions are ours.
TASKS: dict[str, tuple[str, str]] = {
    "role_playing": (
        "Role Playing",
        "the user asks the assistant to act as a particular character or professional (a coach, a historical "
        "figure, a shop assistant, a doctor) and to answer in that role",
    ),
    "daily_chat": (
        "Daily Chat",
        "casual everyday conversation: the user shares a situation, a plan or a feeling and wants a natural, "
        "helpful reply",
    ),
    "domain_qa": (
        "Domain QA",
        "a knowledge question that needs accurate, specific information about the domain",
    ),
    "material_processing": (
        "Given Material Processing",
        "the question contains a short piece of material written out in full (a paragraph, an email, a list, "
        "a small table) and asks the assistant to summarise, extract from, rewrite, classify or translate it",
    ),
    "format_control": (
        "Response Format Control",
        "the question asks for an answer under explicit format constraints (a word limit, a numbered list, "
        "a table, JSON, a fixed number of paragraphs, a required keyword)",
    ),
    "opinion": (
        "View",
        "the user asks for the assistant's opinion, advice or a balanced view on a debatable matter",
    ),
    "creation": (
        "Creation",
        "the user asks for a piece of original writing (a story, a poem, a slogan, a speech, a plan)",
    ),
}

# One worked format example per task, on a theme outside the built-in tree; a question equal to one of these
# was copied, not written.
EXAMPLES: dict[str, tuple[str, tuple[str, str, str]]] = {
    "role_playing": (
        "Houseplants",
        (
            "Pretend you are a friendly garden-centre assistant. I just bought a cactus; how often should I water it?",
            "You are a botanist giving a short talk at a library. Explain to a group of retirees why their orchids "
            "drop their flowers after a move, and what they can do about it.",
            "Act as a plant doctor on a radio call-in show. A caller says her fiddle-leaf fig has brown spots, "
            "droops in the afternoon and sits next to a heater. Diagnose the likely causes in order of probability "
            "and give her a two-week recovery plan.",
        ),
    ),
    "daily_chat": (
        "Houseplants",
        (
            "I finally bought my first plant today, a little pothos! Any tips for a total beginner?",
            "My roommate keeps moving my plants to the dark corner because she says they block the window. "
            "How can I bring this up without starting a fight?",
            "I travel for work two weeks every month and I love plants, but everything I own dies. I live in a "
            "small flat with one north-facing window. Should I give up, or is there a setup that could work for me?",
        ),
    ),
    "domain_qa": (
        "Houseplants",
        (
            "Why do the leaves of a houseplant turn yellow?",
            "What is the difference between overwatering and underwatering a houseplant, and how can I tell which "
            "one is happening?",
            "How does the light level of a north-facing room compare with a south-facing one in lux, and which "
            "common houseplants can photosynthesise enough to grow in each?",
        ),
    ),
    "material_processing": (
        "Houseplants",
        (
            "Summarise this in one sentence: 'Snake plants tolerate low light, need water only every two to three "
            "weeks, and are toxic to cats and dogs if eaten.'",
            "Here is a care label: 'Bright indirect light. Water when top 2 cm of soil is dry. Feed monthly in "
            "spring and summer. Keep above 15 C.' Turn it into a checklist a child could follow.",
            "From this shop inventory, list the plants that are safe for pets and cost under 20 euros: Monstera 25 "
            "euros (toxic); Calathea 18 euros (pet-safe); Peace lily 15 euros (toxic); Spider plant 9 euros "
            "(pet-safe); Boston fern 22 euros (pet-safe).",
        ),
    ),
    "format_control": (
        "Houseplants",
        (
            "Name three easy houseplants as a numbered list.",
            "Explain how to repot a plant in exactly five steps, each step no longer than fifteen words.",
            "Give a weekly care schedule for a pothos, a cactus and a peace lily as a JSON object keyed by plant, "
            "each with the fields water, light and feeding, and add no text outside the JSON.",
        ),
    ),
    "opinion": (
        "Houseplants",
        (
            "Do you think plants make an office nicer to work in?",
            "Is it better to buy expensive rare plants or to grow cheap ones from cuttings? What would you do?",
            "Some people say the houseplant trade harms wild ecosystems through over-collection. Weigh this "
            "argument against the benefits of the trade and say where you come down.",
        ),
    ),
    "creation": (
        "Houseplants",
        (
            "Write a two-line poem about a sunflower.",
            "Write a short, funny product description for a self-watering plant pot.",
            "Write a 200-word story, told by a houseplant, about the family it has lived with for ten years, "
            "ending with a twist.",
        ),
    ),
}

QUESTION_TEMPLATE = """You write realistic questions that people ask an AI assistant.

Domain: {domain}
Topic: {topic}
Theme: {tag}
Task type: {title}: {description}.

Write three new questions of this task type about the theme "{tag}", one for each difficulty level: Easy, \
Medium and Hard. A harder question needs more knowledge, more reasoning steps or more constraints. Every question \
must stand on its own: include the context and all the information needed to answer it, so that it never feels \
abrupt. Do not answer the questions.

Reply in exactly this format:
[Easy][Question Start]...[Question End]
[Medium][Question Start]...[Question End]
[Hard][Question Start]...[Question End]"""

QUESTION_REPLY = """[Easy][Question Start]{easy}[Question End]
[Medium][Question Start]{medium}[Question End]
[Hard][Question Start]{hard}[Question End]"""

# The worked example's own path in the tree (outside the built-in tree).
EXAMPLE_PATH = ("Home and Garden", "Indoor Plants")

CRITIQUE_TEMPLATE = """Below is a question a user asked and the answer an AI assistant gave. Review the answer \
like a demanding expert: what it does well, where it falls short (accuracy, completeness, clarity, following the \
user's instructions, tone), and how it could be improved.

[Dialogue Start]
User: {question}
Assistant: {answer}
[Dialogue End]

Reply in exactly this format:
[Critique Start]
[Strength Start]...[Strength End]
[Weakness Start]...[Weakness End]
[Suggestion Start]...[Suggestion End]
[Critique End]"""

CRITIQUE_REPLY = """[Critique Start]
[Strength Start]{strength}[Strength End]
[Weakness Start]{weakness}[Weakness End]
[Suggestion Start]{suggestion}[Suggestion End]
[Critique End]"""

REFINE_TEMPLATE = """Improve an AI assistant's answer using a reviewer's feedback. Keep what is already good, fix \
every weakness the feedback names and follow its suggestions. Write the improved answer as a direct reply to the \
user; do not mention the feedback or the earlier answer.

[Question Start]{question}[Question End]
[Answer Start]{answer}[Answer End]
[Feedback Start]{feedback}[Feedback End]

Reply in exactly this format:
[Improved Answer Start]...[Improved Answer End]"""

REFINE_REPLY = "[Improved Answer Start]{answer}[Improved Answer End]"

# One worked critique -> rewrite example, shown as an earlier chat turn (small models copy a turn's format far
# more reliably than a format described in words).
DEMO_QUESTION = "Why do the leaves of my houseplant turn yellow?"
DEMO_ANSWER = "Yellow leaves mean the plant is old. Nothing can be done."
DEMO_CRITIQUE = (
    "The answer is short and easy to read.",
    "It is mostly wrong: age explains only the lowest leaves, while overwatering, too little light and a lack of "
    "nutrients are the usual causes. Saying nothing can be done is unhelpful.",
    "Name the common causes, say how to tell them apart, and give one fix for each.",
)
DEMO_REFINED = (
    "Yellow leaves usually have one of four causes. Overwatering is the most common: the soil stays wet and the "
    "leaves go soft and yellow, so let the top few centimetres dry out before watering again. Too little light "
    "makes leaves pale and growth leggy; move the plant closer to a window. A lack of nutrients yellows older "
    "leaves first; feed monthly in spring and summer. Finally, a few of the lowest leaves yellowing and dropping "
    "is normal ageing and needs no action."
)

EXPAND_TEMPLATE = """Here is a topic path from a tree of everyday subjects: {domain} > {topic}.
It already has these tags: {existing}.
Suggest up to {n} more tags under this topic path: specific subjects a person might ask an assistant about, \
each different from the existing tags. Reply with one Python list of strings and nothing else, \
for example ["First Tag", "Second Tag"]."""

FEEDBACK_TEMPLATE = "Strengths: {strength}\nWeaknesses: {weakness}\nSuggestions: {suggestion}"

Messages = list[dict[str, str]]


def _user(text: str) -> Messages:
    return [{"role": "user", "content": text}]


def question_prompt(domain: str, topic: str, tag: str, task: str) -> Messages:
    """The question-synthesis prompt for one tag path and task type: a worked example turn, then the real ask.

    >>> msgs = question_prompt("Food", "Baking", "Sourdough", "domain_qa")
    >>> [m["role"] for m in msgs], "Theme: Sourdough" in msgs[-1]["content"]
    (['user', 'assistant', 'user'], True)
    """
    title, description = TASKS[task]
    theme, (easy, medium, hard) = EXAMPLES[task]

    def ask(d: str, t: str, g: str) -> str:
        return QUESTION_TEMPLATE.format(domain=d, topic=t, tag=g, title=title, description=description)

    return [
        {"role": "user", "content": ask(*EXAMPLE_PATH, theme)},
        {"role": "assistant", "content": QUESTION_REPLY.format(easy=easy, medium=medium, hard=hard)},
        {"role": "user", "content": ask(domain, topic, tag)},
    ]


def answer_prompt(question: str) -> Messages:
    """Condor Void answers the question as a plain user turn."""
    return _user(question)


def critique_prompt(question: str, answer: str) -> Messages:
    """The self-critique prompt (strengths, weaknesses, suggestions), after one worked example turn."""
    s, w, g = DEMO_CRITIQUE
    return [
        {"role": "user", "content": CRITIQUE_TEMPLATE.format(question=DEMO_QUESTION, answer=DEMO_ANSWER)},
        {"role": "assistant", "content": CRITIQUE_REPLY.format(strength=s, weakness=w, suggestion=g)},
        {"role": "user", "content": CRITIQUE_TEMPLATE.format(question=question, answer=answer)},
    ]


def refine_prompt(question: str, answer: str, critique: Critique) -> Messages:
    """The rewrite prompt, after one worked example turn; the critique is fed back as the reviewer's feedback."""
    demo = Critique(*DEMO_CRITIQUE)
    return [
        {
            "role": "user",
            "content": REFINE_TEMPLATE.format(question=DEMO_QUESTION, answer=DEMO_ANSWER, feedback=demo.feedback()),
        },
        {"role": "assistant", "content": REFINE_REPLY.format(answer=DEMO_REFINED)},
        {
            "role": "user",
            "content": REFINE_TEMPLATE.format(question=question, answer=answer, feedback=critique.feedback()),
        },
    ]


def expand_prompt(domain: str, topic: str, existing: list[str], n: int) -> Messages:
    """The tag-expansion prompt for one topic path."""
    return _user(EXPAND_TEMPLATE.format(domain=domain, topic=topic, existing=json.dumps(existing), n=n))


def prompts_hash() -> str:
    """A hash of every template, task description and example: part of the synthesis recipe.

    >>> len(prompts_hash())
    16
    """
    blob = json.dumps(
        [
            QUESTION_TEMPLATE,
            QUESTION_REPLY,
            EXAMPLE_PATH,
            CRITIQUE_TEMPLATE,
            CRITIQUE_REPLY,
            REFINE_TEMPLATE,
            REFINE_REPLY,
            DEMO_QUESTION,
            DEMO_ANSWER,
            DEMO_CRITIQUE,
            DEMO_REFINED,
            EXPAND_TEMPLATE,
            FEEDBACK_TEMPLATE,
            TASKS,
            EXAMPLES,
            "answer=question-as-user-turn",
        ],
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ parsing
NO_MARKERS = "no_markers"
"""The ``detail`` of a lenient parse that accepted a reply without any markers."""


def _marker(*words: str) -> re.Pattern[str]:
    return re.compile(r"\[\s*" + r"\s+".join(words) + r"\s*\]", re.I)


Q_START, Q_END = _marker("question", "start"), _marker("question", "end")
_DIFF_TAG = re.compile(r"\[\s*(easy|medium|hard)\s*\]", re.I)
_LEADING_DIFF = re.compile(r"^\s*(?:\[\s*(easy|medium|hard)\s*\]|(easy|medium|hard)(?:\s+question)?\s*[:\-])\s*", re.I)
# One numbered line ("1. ...", "Question 2: ..."); [ \t] not \s, so an empty item never swallows the next line.
_NUMBERED = re.compile(
    r"^[ \t]*(?:\*\*)?(?:question[ \t]*)?(\d+)[ \t]*[.):][ \t]*(?:\*\*)?[ \t]*(\S.*?)[ \t]*$", re.I | re.M
)


def extract_block(text: str, start: re.Pattern[str], end: re.Pattern[str]) -> tuple[str | None, str | None]:
    """The text between the one ``start`` and the one ``end`` marker: ``(content, None)`` or ``(None, reason)``.

    >>> extract_block("ok [Answer Start] hi [Answer End] bye", _marker("answer", "start"), _marker("answer", "end"))
    ('hi', None)
    """
    starts, ends = list(start.finditer(text)), list(end.finditer(text))
    if not starts:
        return None, "missing_start_marker"
    if len(starts) > 1 or len(ends) > 1:
        return None, "repeated_marker"
    if not ends:
        return None, "missing_end_marker"
    if ends[0].start() < starts[0].end():
        return None, "misordered_markers"
    return text[starts[0].end() : ends[0].start()].strip(), None


@dataclass
class QuestionParse:
    """What one question-synthesis reply yielded: a question or a failure reason per difficulty."""

    questions: dict[str, str] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    form: str | None = None
    """How the reply was read: ``tagged`` (markers and tags), ``ordered`` (blocks placed Easy, Medium, Hard by
    order), or with ``lenient`` also ``lines`` (one unclosed block per line) or ``numbered`` (a 1-2-3 list)."""


def _fail_all(reason: str) -> QuestionParse:
    return QuestionParse(reasons=dict.fromkeys(DIFFICULTIES, reason))


def _split_label(content: str, diff: str | None) -> tuple[str | None, str]:
    lead = _LEADING_DIFF.match(content)
    if lead:
        return diff or (lead.group(1) or lead.group(2)).lower(), content[lead.end() :].strip()
    return diff, content.strip()


def _blocks(text: str) -> tuple[list[tuple[str | None, str]] | None, str | None]:
    """Closed ``[Question Start]...[Question End]`` blocks with the difficulty tag before each, or a reason."""
    marks = sorted(
        [(m.start(), m.end(), "start") for m in Q_START.finditer(text)]
        + [(m.start(), m.end(), "end") for m in Q_END.finditer(text)]
    )
    spans: list[tuple[int, int, int, int]] = []  # (start marker start, content start, content end, end marker end)
    open_at: tuple[int, int] | None = None
    for s, e, kind in marks:
        if kind == "start":
            if open_at is not None:
                return None, "missing_end_marker"
            open_at = (s, e)
        else:
            if open_at is None:
                return None, "repeated_marker"
            spans.append((open_at[0], open_at[1], s, e))
            open_at = None
    if open_at is not None:
        return None, "missing_end_marker"
    if not spans:
        return None, "missing_start_marker"
    out, prev_end = [], 0
    for mstart, cstart, cend, mend in spans:
        gap_tags = _DIFF_TAG.findall(text[prev_end:mstart])
        out.append(_split_label(text[cstart:cend], gap_tags[-1].lower() if gap_tags else None))
        prev_end = mend
    return out, None


def _lines(text: str) -> list[tuple[str | None, str]]:
    """Lenient: every line holding a ``[Question Start]`` is one question, ended by the line end if not closed."""
    out = []
    for line in text.splitlines():
        m = Q_START.search(line)
        if m is None:
            continue
        tags = _DIFF_TAG.findall(line[: m.start()])
        out.append(_split_label(Q_END.split(line[m.end() :])[0], tags[-1].lower() if tags else None))
    return out


def _numbered(text: str) -> list[tuple[str | None, str]]:
    """Lenient, for a reply without question markers: a numbered list of exactly three lines."""
    if Q_START.search(text) or Q_END.search(text):
        return []
    items = _NUMBERED.findall(text)
    if [n for n, _ in items] != ["1", "2", "3"]:
        return []
    return [_split_label(q, None) for _, q in items]


def _place(found: list[tuple[str | None, str]], lenient: bool) -> tuple[dict[str, str] | None, str]:
    """Questions by difficulty: by their tags when each is tagged once, else by order when there are three."""
    tags = [d for d, _ in found]
    if None not in tags and len(set(tags)) == len(tags):
        return {d: q for d, q in found}, "tagged"
    in_order = len(found) == 3 and all(d in (None, pos) for d, pos in zip(tags, DIFFICULTIES, strict=True))
    if in_order or (lenient and len(found) == 3):
        return {pos: q for (_, q), pos in zip(found, DIFFICULTIES, strict=True)}, "ordered"
    return None, "repeated_marker" if None not in tags else "missing_difficulty"


def parse_questions(text: str, *, lenient: bool = False) -> QuestionParse:
    """Read ``[Easy][Question Start]...[Question End]`` x 3 from a reply.

    Strict: every block closed before the next opens, no stray end marker, one block per difficulty tag; three
    untagged blocks (or tags that agree with their order) are read as Easy, Medium, Hard. ``lenient`` (for small
    models) also reads three closed blocks in order whatever their tags say; when the blocks are not well-formed,
    one question per line that holds a ``[Question Start]``; and, when the reply has no question marker at all,
    a numbered list of exactly three lines.

    >>> p = parse_questions("Hi [Easy][Question Start] A? [Question End] [Medium][Question Start]B?[Question End]")
    >>> p.questions, p.reasons
    ({'easy': 'A?', 'medium': 'B?'}, {'hard': 'missing_question'})
    >>> parse_questions("[Easy][Question Start]A?\\n[Medium][Question Start]B?", lenient=True).questions
    {'easy': 'A?', 'medium': 'B?'}
    """
    found, reason = _blocks(text)
    placed, form = None, None
    if found is not None:
        placed, form = _place(found, lenient)
        if placed is None:
            reason = form
    if lenient and placed is None:
        for fallback, found in (("lines", _lines(text)), ("numbered", _numbered(text))):
            placed = _place(found, lenient)[0] if found else None
            if placed is not None:
                form = fallback
                break
    if placed is None:
        return _fail_all(reason)
    out = QuestionParse(form=form)
    for d in DIFFICULTIES:
        q = placed.get(d)
        if q is None:
            out.reasons[d] = "missing_question"
        elif not _WORD.search(q):
            out.reasons[d] = "empty_question"
        elif normalise_tag(q) in _EXAMPLE_KEYS:
            out.reasons[d] = "copied_example"
        else:
            out.questions[d] = q
    return out


_WORD = re.compile(r"\w")
_EXAMPLE_KEYS = {normalise_tag(q) for _, qs in EXAMPLES.values() for q in qs}


def parse_answer(text: str) -> tuple[str | None, str | None]:
    """A Condor Void answer is the whole reply; only emptiness is a failure.

    >>> parse_answer("  \\n ")
    (None, 'empty_answer')
    """
    t = text.strip()
    return (t, None) if t else (None, "empty_answer")


@dataclass(frozen=True)
class Critique:
    """A parsed critique; ``text`` is the whole critique as written (what a lenient parse feeds back)."""

    strength: str
    weakness: str
    suggestion: str
    text: str = ""

    def feedback(self) -> str:
        if not (self.strength or self.weakness or self.suggestion):
            return self.text
        return FEEDBACK_TEMPLATE.format(
            strength=self.strength or "(none given)",
            weakness=self.weakness or "(none given)",
            suggestion=self.suggestion or "(none given)",
        )


C_START, C_END = _marker("critique", "start"), _marker("critique", "end")
# Any "[Word ... Start]" / "[Word ... End]" marker, e.g. the "[Dialogue End]" a small model echoes from the prompt.
_ANY_MARKER = re.compile(r"\[\s*[A-Za-z][A-Za-z ]*?\s+(?:start|end)\s*\]", re.I)


def _bare(text: str) -> str:
    """A marker-free reply taken whole (lenient): echoed prompt markers removed, blank if no word is left."""
    t = _ANY_MARKER.sub("", text).strip()
    return t if _WORD.search(t) else ""


_SECTIONS = {name: (_marker(name, "start"), _marker(name, "end")) for name in ("strength", "weakness", "suggestion")}
_ANY_CRITIQUE_MARKER = re.compile(r"\[\s*(critique|strength|weakness|suggestion)\s+(start|end)\s*\]", re.I)


def parse_critique(text: str, *, lenient: bool = False) -> tuple[Critique | None, str | None, str | None]:
    """``(critique, None, None)`` or ``(None, reason, detail)``; reasons: ``malformed_critique``, ``empty_critique``.

    The outer ``[Critique Start]``/``[Critique End]`` may be left out when the three sections are intact.
    ``lenient`` takes a reply with no critique marker at all as an unsectioned critique (detail ``no_markers``).

    >>> c, reason, _ = parse_critique("[Strength Start]clear[Strength End][Weakness Start]short[Weakness End]"
    ...                               "[Suggestion Start]add an example[Suggestion End]")
    >>> c.weakness, reason
    ('short', None)
    """
    if lenient and not _ANY_CRITIQUE_MARKER.search(text):
        t = _bare(text)
        return (Critique("", "", "", t), None, NO_MARKERS) if t else (None, "empty_critique", None)
    n_start, n_end = len(C_START.findall(text)), len(C_END.findall(text))
    if n_start == n_end == 0:
        inner = text.strip()
    else:
        inner, why = extract_block(text, C_START, C_END)
        if inner is None:
            return None, "malformed_critique", f"critique: {why}"
    parts = {}
    for name, (start, end) in _SECTIONS.items():
        content, why = extract_block(inner, start, end)
        if content is None:
            return None, "malformed_critique", f"{name}: {why}"
        parts[name] = content
    if not any(_WORD.search(v) for v in parts.values()):
        return None, "empty_critique", None
    return Critique(**parts, text=inner), None, None


IA_START, IA_END = _marker("improved", "answer", "start"), _marker("improved", "answer", "end")


def parse_refined(text: str, *, lenient: bool = False) -> tuple[str | None, str | None, str | None]:
    """``(improved answer, None, None)`` or ``(None, reason, detail)``.

    ``lenient`` takes a reply with neither marker as the improved answer (detail ``no_markers``).

    >>> parse_refined("Here you go: [Improved Answer Start]Better.[Improved Answer End]")
    ('Better.', None, None)
    >>> parse_refined("[Improved Answer Start]Better.")
    (None, 'malformed_refined', 'missing_end_marker')
    """
    if lenient and not IA_START.search(text) and not IA_END.search(text):
        t = _bare(text)
        return (t, None, NO_MARKERS) if t else (None, "empty_refined", None)
    content, why = extract_block(text, IA_START, IA_END)
    if content is None:
        return None, "malformed_refined", why
    if not _WORD.search(content):
        return None, "empty_refined", None
    return content, None, None
