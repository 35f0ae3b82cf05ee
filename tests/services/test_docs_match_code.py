"""docs/architecture.md and docs/extending.md are drawn from the code: the stage table is the chain's
declaration, and every file they name exists."""

from __future__ import annotations

import re
from pathlib import Path

from dreammask.shared.chain import DEFAULT_CHAIN

REPO = Path(__file__).resolve().parents[2]
DOCS = ("docs/architecture.md", "docs/extending.md")


def _stage_rows() -> list[list[str]]:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The stage chain", 1)[1].split("\n## ", 1)[0]
    return [[c.strip().strip("`") for c in line.strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| `")]


def test_the_stage_table_is_the_chain():
    rows = _stage_rows()
    assert [r[0] for r in rows] == list(DEFAULT_CHAIN.names)
    for row, st in zip(rows, DEFAULT_CHAIN, strict=True):
        name, scope, task, handler, output, batch, salt, backends = row
        module, _, fn = st.handler.partition(":")
        assert (scope, task) == (st.scope, st.task), name
        assert handler == module.replace("dreammask.", "", 1).replace(".", "/") + ".py:" + fn, name
        key = st.output("JOB", "s00000") if st.per_scene else st.output("JOB")
        assert output == key.replace("JOB", "{job}").replace("s00000", "{scene}"), name
        assert batch == (st.batch_size or "—") and salt == str(st.seed_salt or "—"), name
        assert backends == (", ".join(st.backends) or "—"), name


def test_every_file_the_docs_name_exists():
    missing = []
    for doc in DOCS:
        text = (REPO / doc).read_text(encoding="utf-8")
        for path in re.findall(r"`((?:shared|services|trainer|tests|docs|bench|deploy)/[\w./-]+)`", text):
            if not (REPO / path).exists():
                missing.append(f"{doc}: {path}")
    assert missing == []


def _shared_table_modules() -> list[str]:
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("What several services need lives in `shared/`", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return [name for row in rows for name in re.findall(r"`([\w./]+)`", row.split("|")[1])]


def test_the_shared_module_table_names_every_module_of_shared_and_nothing_else():
    shared = REPO / "shared"
    modules = {p.name for p in shared.glob("*.py") if p.name != "__init__.py"}
    modules |= {f"{p.name}/" for p in shared.iterdir() if (p / "__init__.py").exists()}
    listed = _shared_table_modules()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    assert sorted(set(listed)) == sorted(modules)
