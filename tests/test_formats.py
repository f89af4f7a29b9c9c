"""The export-format registry: a golden table of every format's declarations (equal to the four parallel tables
the formats replaced), a format registered from a test module exported and imported end to end, and the refusals
(duplicate names, unknown formats and options) as one-line errors.

Shrunken settings: three toy rows and a toy tab-separated format of ~30 lines; no model, no trainer library.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import curate.formats as formats
from curate.errors import CurateError
from curate.formats import (
    FORMATS,
    ExportContext,
    Format,
    export_version,
    get_format,
    holds_export,
    make_options,
    read_export,
    read_import,
    register,
)
from curate.formats.verl import Verl
from curate.outputs import atomic_write

# name: (suffix, folder data suffix, carries_labels, readable, plain_import, whole_folder, options), as main had them
# in CARRIES_LABELS, _FILE_SUFFIX / _DATA_SUFFIX, IMPORTERS and the exporters' keyword-only parameters.
GOLDEN = {
    "trl-sft": (".jsonl", ".jsonl", True, True, False, False, ["style", "chat_template"]),
    "trl-grpo": (".jsonl", ".jsonl", False, True, False, False, []),
    "verl": (".parquet", ".parquet", False, True, False, False, ["split", "ability", "reward_style"]),
    "verl-sft": (".parquet", ".parquet", False, True, False, False, []),
    "openrlhf": (".jsonl", ".jsonl", False, True, False, False, []),
    "llamafactory": (None, ".jsonl", False, True, False, False, ["dataset_name"]),
    "hf": (None, None, True, True, False, True, []),
    "parquet": (".parquet", ".parquet", True, False, True, False, []),
    "jsonl": (".jsonl", ".jsonl", True, False, True, False, []),
    "trl-dpo": (".jsonl", ".jsonl", False, True, False, False, []),
    "llamafactory-dpo": (None, ".jsonl", False, True, False, False, ["dataset_name"]),
    "openrlhf-dpo": (".jsonl", ".jsonl", False, True, False, False, []),
}
DEFAULTS = {
    "trl-sft": {"style": "messages", "chat_template": "smollm2"},
    "verl": {"split": "train", "ability": None, "reward_style": "rule"},
    "llamafactory": {"dataset_name": None},
    "llamafactory-dpo": {"dataset_name": None},
}


# ------------------------------------------------------------------------------------------------ the toy format
@dataclass
class QaOptions:
    """Export options of the toy ``qa`` format."""

    header: bool = True
    """Write a header line first."""


class Qa(Format):
    """Tab-separated ``id``, question (the last user turn) and answer, one row per line."""

    name = "qa-toy"
    suffix = ".tsv"
    options = QaOptions

    def write(self, table, ctx: ExportContext, opts: QaOptions) -> tuple[list[Path], list[str]]:
        path = ctx.out_dir / f"{ctx.stem}{self.suffix}"
        lines = ["id\tquestion\tanswer"] if opts.header else []
        for r in table.select(["id", "prompt", "answer"]).to_pylist():
            lines.append(f"{r['id']}\t{r['prompt'][-1]['content']}\t{r['answer']}")
        atomic_write(path, lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
        return [path], [f"Toy qa file ({'with' if opts.header else 'no'} header)."]

    def read(self, path: Path, src: str, split: str) -> tuple[list[dict[str, Any]], list[Path]]:
        file = path if path.is_file() else next(path.glob(f"*{self.suffix}"))
        lines = file.read_text().splitlines()
        if lines and lines[0].startswith("id\t"):
            lines = lines[1:]
        rows = []
        for line in lines:
            rid, question, answer = line.split("\t")
            rows.append({"id": rid, "prompt": [{"role": "user", "content": question}], "answer": answer})
        return rows, [file]


@pytest.fixture
def qa():
    """The toy format, registered for one test and removed after it, whatever the test does."""
    register(Qa)
    yield Qa
    FORMATS.pop(Qa.name, None)


@pytest.fixture
def toy(store):
    import curate

    rows = [
        {"id": f"q{i}", "prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(3)
    ]
    return curate.save(rows, name="toy", store=store)


# ------------------------------------------------------------------------------------------------ the registry
def test_registry_matches_the_golden_table():
    assert list(FORMATS) == list(GOLDEN)
    for name, cls in FORMATS.items():
        options = [f.name for f in dataclasses.fields(cls.options)]
        got = (
            cls.suffix,
            cls.folder_data_suffix(),
            cls.carries_labels,
            cls.readable(),
            cls.plain_import,
            cls.whole_folder,
            options,
        )
        assert got == GOLDEN[name], name
        assert cls.name == name and get_format(name) is cls
        assert dataclasses.asdict(cls.options()) == DEFAULTS.get(name, {})
    # The order that the token-label refusal lists formats in, unchanged since it was a hand-written tuple.
    assert [n for n, c in FORMATS.items() if c.carries_labels] == ["trl-sft", "hf", "parquet", "jsonl"]
    assert [n for n, c in FORMATS.items() if c.reads_split] == ["hf"]


def _documented_fields(cls: type) -> dict[str, str | None]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs: dict[str, str | None] = {}
    for node, after in zip(body, [*body[1:], None], strict=True):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            doc = after.value.value if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) else None
            docs[node.target.id] = doc
    return docs


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_every_option_field_has_a_docstring(name):
    cls = FORMATS[name]
    assert cls.__doc__ and cls.options.__doc__
    docs = _documented_fields(cls.options)
    assert set(docs) == {f.name for f in dataclasses.fields(cls.options)}
    assert all(isinstance(d, str) and d.strip() for d in docs.values()), docs


def test_every_format_module_says_what_it_writes():
    folder = Path(formats.__file__).parent
    for path in sorted(folder.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc and len(doc.splitlines()) >= 3, path.name
    # each trainer file names where its field names come from
    for stem in ("trl", "verl", "openrlhf", "llamafactory"):
        assert "Field names follow" in ast.get_docstring(ast.parse((folder / f"{stem}.py").read_text()))


# ------------------------------------------------------------------------------------------------ a new format
def test_a_format_registered_at_runtime_exports_and_imports(store, toy, qa, tmp_path):
    result = export_version(toy, format="qa-toy", out=tmp_path / "qa", header=False)
    assert result.files == [tmp_path / "qa" / "toy.tsv", tmp_path / "qa" / "curate.json"]
    assert (
        tmp_path / "qa" / "toy.tsv"
    ).read_text() == "q0\tWhat is 0 + 0?\t0\nq1\tWhat is 1 + 1?\t2\nq2\tWhat is 2 + 2?\t4\n"
    assert (
        result.note
        == f"Exported {toy.ref} (id {toy.id}, 3 rows) as qa-toy to {tmp_path / 'qa'}\nToy qa file (no header)."
    )
    meta = json.loads((tmp_path / "qa" / "curate.json").read_text())
    assert {k: meta[k] for k in ("format", "rows", "files", "options")} == {
        "format": "qa-toy",
        "rows": 3,
        "files": ["toy.tsv"],
        "options": {"header": False},
    }
    assert holds_export(tmp_path / "qa", "qa-toy") and not holds_export(tmp_path / "qa", "verl")

    # The same export again needs no --overwrite; another one does.
    export_version(toy, format="qa-toy", out=tmp_path / "qa", header=False)
    with pytest.raises(CurateError, match=r"is a non-empty folder; pass --overwrite"):
        export_version(toy, format="qa-toy", out=tmp_path / "qa")

    back = read_export(tmp_path / "qa", format="qa-toy")
    assert back.column_names == ["id", "prompt", "answer", "data_source"]
    keys = ["id", "prompt", "answer"]
    assert back.select(keys).to_pylist() == toy.to_arrow().select(keys).to_pylist()
    assert back.column("data_source").to_pylist() == ["toy"] * 3  # the name curate.json records

    table, op = read_import(tmp_path / "qa", format="qa-toy", split="test")
    assert table.equals(back)
    assert op == {
        "name": "import",
        "format": "qa-toy",
        "source": "toy.tsv",
        "digest": op["digest"],
        "data_source": None,
        "split": None,  # the toy format has no splits
    }
    imported = store.commit(table, name="toy-back", op=op, stats={"layout": "qa-toy", "rows": table.num_rows})
    _, again = read_import(tmp_path / "qa" / "toy.tsv", format="qa-toy")
    assert store.lookup("toy-back", [], again).id == imported.id  # the folder and its file are one source

    # --out naming the file itself, by the declared suffix
    single = export_version(toy, format="qa-toy", out=tmp_path / "one" / "named.tsv")
    assert single.files[0] == tmp_path / "one" / "named.tsv" and single.out_dir == tmp_path / "one"


def test_the_toy_format_is_gone_after_its_test():
    assert "qa-toy" not in FORMATS and list(FORMATS) == list(GOLDEN)


def test_a_format_without_labels_refuses_a_labelled_version(store, qa, tmp_path):
    import curate

    v = curate.save([{"id": "a", "input_ids": [1, 2], "labels": [-100, 2]}], name="tok", store=store)
    with pytest.raises(CurateError) as e:
        export_version(v, format="qa-toy", out=tmp_path / "x")
    assert str(e.value) == (
        "tok@v1: rows carry token-level labels (input_ids, labels) and --format qa-toy cannot hold them; "
        "formats that can: trl-sft, hf, parquet, jsonl (or pass drop_labels=True / --drop-labels to export the "
        "text without the token masks)"
    )
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ refusals
def test_duplicate_registration_is_refused(qa):
    with pytest.raises(CurateError) as e:
        register(Verl)
    assert str(e.value) == "export format 'verl' is already registered (Verl)"

    class Again(Qa):
        pass

    with pytest.raises(CurateError, match=r"^export format 'qa-toy' is already registered \(Qa\)$"):
        register(Again)
    assert FORMATS["verl"] is Verl and FORMATS["qa-toy"] is Qa


def test_malformed_formats_are_refused():
    class Nameless(Format):
        suffix = ".x"

    class NoFile(Format):
        name = "no-file"

    @dataclass
    class Clashing:
        """Options that shadow export_version's keywords."""

        overwrite: bool = False
        """Never reaches the format."""

    class Shadow(Format):
        name = "shadow"
        suffix = ".x"
        options = Clashing

    class NotDataclass(Format):
        name = "not-dc"
        suffix = ".x"
        options = dict

    for cls, msg in [
        (Nameless, "format class test_malformed_formats_are_refused.<locals>.Nameless has no name"),
        (NoFile, "export format 'no-file': writes into a folder but declares no suffix or data_suffix"),
        (Shadow, "export format 'shadow': option(s) overwrite clash with export_version's own"),
        (NotDataclass, "export format 'not-dc': options must be a dataclass, got <class 'dict'>"),
    ]:
        with pytest.raises(CurateError) as e:
            register(cls)
        assert str(e.value) == msg
    assert list(FORMATS) == list(GOLDEN)


def test_unknown_format_and_option_errors_are_one_line(store, toy, tmp_path):
    available = (
        "hf, jsonl, llamafactory, llamafactory-dpo, openrlhf, openrlhf-dpo, parquet, trl-dpo, trl-grpo, trl-sft, "
        "verl, verl-sft"
    )
    errors = []
    for call in (
        lambda: get_format("axolotl"),
        lambda: export_version(toy, format="axolotl", out=tmp_path / "x"),
        lambda: export_version(toy, format="verl", out=tmp_path / "x", splt="test"),
        lambda: export_version(toy, format="openrlhf", out=tmp_path / "x", style="messages"),
        lambda: make_options("trl-sft", {"style": "chat"}),
        lambda: read_export(tmp_path, format="axolotl"),
        lambda: read_import(tmp_path, format="jsonl"),
    ):
        with pytest.raises(CurateError) as e:
            call()
        errors.append(str(e.value))
    readable = "hf, llamafactory, llamafactory-dpo, openrlhf, openrlhf-dpo, trl-dpo, trl-grpo, trl-sft, verl, verl-sft"
    assert errors == [
        f"unknown export format 'axolotl' (available: {available})",
        f"unknown export format 'axolotl' (available: {available})",
        "--format verl: unknown option(s) splt (accepted: split, ability, reward_style, drop_labels)",
        "--format openrlhf: unknown option(s) style (accepted: drop_labels)",
        "--format trl-sft: style must be 'messages' or 'prompt-completion', got 'chat'",
        f"cannot import --format 'axolotl' (readable: {readable}; plain jsonl and parquet import without --format)",
        f"cannot import --format 'jsonl' (readable: {readable}; plain jsonl and parquet import without --format)",
    ]
    assert all("\n" not in m for m in errors)
    assert not (tmp_path / "x").exists()


def test_a_format_that_cannot_be_read_says_so():
    with pytest.raises(CurateError, match=r"^--format parquet cannot be read back$"):
        get_format("parquet")().read(Path("x.parquet"), "x.parquet", "train")


def test_options_are_checked_before_anything_is_written(store, toy, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep")
    with pytest.raises(CurateError, match=r"^--format verl: reward_style must be 'rule' or 'model', got 'llm'$"):
        export_version(toy, format="verl", out=tmp_path / "out", reward_style="llm", overwrite=True)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
