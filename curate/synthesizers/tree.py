"""World Knowledge Tree for Condor synthesis: domain -> topic -> tags, as YAML.

Condor (Cao et al., ACL 2025, arXiv 2501.12273, §3.2.1) seeds question synthesis with a tree of life themes whose
leaves ("tags") an LLM expands. Here a tree is a plain mapping ``{domain: {topic: [tag, ...]}}`` loaded from YAML;
a tag path is ``(domain, topic, tag)``. ``builtin`` is a seed tree written for curate (12 domains, 3 topics each,
3 tags each). ``expand`` asks an LLM for more tags of one topic path at a time and parses the reply strictly as a
Python/JSON list of strings.

Departures from the paper: the tree has a fixed depth of three (the paper's roots + LLM leaves, plus the README's
sub-topic level); the trending-topic augmentation from Zhihu/Reddit is left out (no network here); tags are
de-duplicated within a topic after case and whitespace normalisation.

    curate synth condor --name OUT --tree my_tree.yaml --expand

Example:
    >>> tree = load_tree("builtin")
    >>> leaves(tree)[0]
    ('Health and Wellbeing', 'Nutrition', 'Meal Planning on a Budget')
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from curate.errors import InputError
from curate.synthesizers.prompts import expand_prompt, normalise_tag

Tree = dict[str, dict[str, list[str]]]
TagPath = tuple[str, str, str]

BUILTIN = "builtin"
BUILTIN_PATH = Path(__file__).with_name("builtin_tree.yaml")


def _clean(text: str) -> str:
    return " ".join(text.split())


def dedupe_tags(tags: Sequence[str], existing: Sequence[str] = ()) -> list[str]:
    """``tags`` without blanks and without repeats of each other or of ``existing`` (first spelling kept).

    >>> dedupe_tags(["Chess", " chess ", "Go", ""], existing=["go"])
    ['Chess']
    """
    seen = {normalise_tag(t) for t in existing}
    out = []
    for t in tags:
        key = normalise_tag(t)
        if key and key not in seen:
            seen.add(key)
            out.append(_clean(t))
    return out


def validate_tree(obj: Any, source: str = "tree") -> Tree:
    """Check the ``{domain: {topic: [tag, ...]}}`` shape; return it cleaned and de-duplicated per topic."""
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{source}: expected a non-empty mapping of domain -> topic -> list of tags")
    tree: Tree = {}
    for domain, topics in obj.items():
        if not isinstance(domain, str) or not domain.strip():
            raise InputError(f"{source}: domain {domain!r}: expected a non-empty string")
        if not isinstance(topics, dict) or not topics:
            raise InputError(f"{source}: domain {domain!r}: expected a non-empty mapping of topic -> list of tags")
        d = _clean(domain)
        if d in tree:
            raise InputError(f"{source}: domain {domain!r}: appears twice after whitespace normalisation")
        tree[d] = {}
        for topic, tags in topics.items():
            where = f"{source}: {domain} > {topic}"
            if not isinstance(topic, str) or not topic.strip():
                raise InputError(f"{source}: domain {domain!r}: topic {topic!r}: expected a non-empty string")
            if not isinstance(tags, list) or not tags:
                raise InputError(f"{where}: expected a non-empty list of tags")
            for j, t in enumerate(tags):
                if not isinstance(t, str) or not t.strip():
                    raise InputError(f"{where}: tag {j}: expected a non-empty string, got {t!r}")
            tree[d][_clean(topic)] = dedupe_tags(tags)
    return tree


def load_tree(path: str | Path = BUILTIN) -> Tree:
    """Read a tree from YAML (or the built-in seed tree with ``"builtin"``).

    >>> sum(len(t) for t in load_tree("builtin").values())
    36
    """
    import yaml

    p = BUILTIN_PATH if str(path) == BUILTIN else Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"--tree {path}: cannot read ({e.strerror or e})") from None
    try:
        obj = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InputError(f"--tree {path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return validate_tree(obj, source=f"--tree {path}")


def save_tree(tree: Tree, path: str | Path) -> Path:
    """Write ``tree`` as YAML (readable by ``load_tree``).

    >>> save_tree({"A": {"B": ["c"]}}, "/tmp/t.yaml")  # doctest: +SKIP
    """
    import yaml

    p = Path(path)
    p.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return p


def leaves(tree: Tree) -> list[TagPath]:
    """Every ``(domain, topic, tag)`` path in file order.

    >>> leaves({"A": {"B": ["c", "d"]}})
    [('A', 'B', 'c'), ('A', 'B', 'd')]
    """
    return [(d, t, tag) for d, topics in tree.items() for t, tags in topics.items() for tag in tags]


def interleaved_leaves(tree: Tree) -> list[TagPath]:
    """All tag paths, taking one from each domain in turn, so a ``--limit`` prefix spans every domain.

    >>> interleaved_leaves({"A": {"x": ["1", "2"]}, "B": {"y": ["3"]}})
    [('A', 'x', '1'), ('B', 'y', '3'), ('A', 'x', '2')]
    """
    per_domain = [[(d, t, tag) for t, tags in topics.items() for tag in tags] for d, topics in tree.items()]
    out: list[TagPath] = []
    for i in range(max((len(x) for x in per_domain), default=0)):
        out += [x[i] for x in per_domain if i < len(x)]
    return out


def tree_hash(tree: Tree) -> str:
    """A content hash of the tree (order-sensitive: order decides ``--limit`` prefixes).

    >>> tree_hash({"A": {"B": ["c"]}}) == tree_hash({"A": {"B": ["c"]}})
    True
    """
    blob = json.dumps(tree, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ expansion
_LIST_RE = re.compile(r"\[[^\[\]]*\]", re.S)


def parse_tag_list(text: str) -> tuple[list[str] | None, str | None]:
    """Read the one list of strings in an LLM reply: ``(tags, None)`` or ``(None, reason)``.

    Chatter around the list is ignored; the list itself must be a Python or JSON list literal of strings,
    and there must be exactly one.

    >>> parse_tag_list('Sure! ["Chess Clubs", "Go"] Hope this helps.')
    (['Chess Clubs', 'Go'], None)
    >>> parse_tag_list("- Chess\\n- Go")
    (None, 'no_list')
    """
    found = _LIST_RE.findall(text)
    if not found:
        return None, "no_list"
    if len(found) > 1:
        return None, "repeated_list"
    literal = found[0]
    try:
        value = json.loads(literal)
    except ValueError:
        try:
            value = ast.literal_eval(literal)
        except (ValueError, SyntaxError):
            return None, "malformed_list"
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None, "malformed_list"
    tags = [_clean(v) for v in value if v.strip()]
    return (tags, None) if tags else (None, "empty_list")


Complete = Callable[[list[list[dict[str, str]]]], list[str]]


def expand(tree: Tree, complete: Complete, *, max_new: int = 5) -> tuple[Tree, dict[str, Any]]:
    """Grow every topic by up to ``max_new`` LLM-proposed tags (one prompt per topic path, sent as one batch).

    ``complete`` maps a list of chat prompts to one reply text each (``CachedLLM.complete`` in Condor, so
    expansion calls are cached like every other call). Replies that are not exactly one list of strings add
    nothing; their reasons are counted in the returned report.

    >>> grown, report = expand({"A": {"B": ["c"]}}, lambda ps: ['["d", "C"]'] * len(ps))
    >>> grown, report["added"]
    ({'A': {'B': ['c', 'd']}}, 1)
    """
    if max_new < 1:
        raise InputError(f"--expand-tags must be >= 1, got {max_new}")
    paths = [(d, t) for d, topics in tree.items() for t in topics]
    replies = complete([expand_prompt(d, t, tree[d][t], max_new) for d, t in paths])
    grown: Tree = {d: {t: list(tags) for t, tags in topics.items()} for d, topics in tree.items()}
    reasons: dict[str, int] = {}
    added = 0
    for (d, t), reply in zip(paths, replies, strict=True):
        tags, reason = parse_tag_list(reply)
        if reason is not None:
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        new = dedupe_tags(tags, existing=grown[d][t])[:max_new]
        grown[d][t] += new
        added += len(new)
    return grown, {"topics": len(paths), "added": added, "failed": reasons}
