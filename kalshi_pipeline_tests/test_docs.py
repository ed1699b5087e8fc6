"""The README and docs/ stand alone: they point only at files a fresh clone has."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Files that live beside the repository while it is developed, never in a user's clone.
OUTSIDE = re.compile(
    r"\.\./|/work/|design\.md|kalshi-protocol\.md|kalshi-changes|dagster-notes\.md|"
    r"duckdb-quack\.md|style\.md|predecessor/|review\.md"
)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_a_document_mentions_no_file_outside_the_repository(doc: Path) -> None:
    text = doc.read_text()
    found = [m.group(0) for m in OUTSIDE.finditer(text)]
    assert not found, f"{doc.name} refers to files a user does not have: {sorted(set(found))}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_inside_the_repository(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "#", "data:", "mailto:")):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
        assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_the_docs_the_readme_promises_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in ("docs/protocol.md", "docs/operating.md"):
        assert f"]({page})" in readme and (ROOT / page).exists()
    assert ".venv/bin/kalshi-pipeline" in readme and "source .venv/bin/activate" in readme


def test_the_benchmark_section_is_only_what_the_bench_command_writes() -> None:
    from kalshi_pipeline.bench.report import readme_section

    readme = (ROOT / "README.md").read_text()
    tail = readme.split("<!-- bench:end -->", 1)[1]
    assert tail.strip() == "", "hand-written text after the benchmark markers goes stale"
    latest = ROOT / "benchmarks" / "results" / "latest.json"
    section = readme_section(json.loads(latest.read_text()))
    assert not OUTSIDE.search(section)


def test_every_feed_event_kind_the_code_emits_is_explained_for_operators() -> None:
    code = "\n".join(p.read_text() for p in (ROOT / "kalshi_pipeline").rglob("*.py"))
    emitted = set(re.findall(r'emit\(\s*"[a-z]+",\s*"([a-z_]+)"', code))
    emitted |= set(re.findall(r'"(database_busy|database_free)"', code))
    emitted |= set(re.findall(r'(?:batch\.event|batch\.error)\([^)]*?"([a-z_]+)",', code))
    emitted |= set(re.findall(r'"writer",\s*"([a-z_]+)"', code))
    emitted |= set(re.findall(r'notes\.append\(\("([a-z_]+)"', code))
    emitted |= set(re.findall(r'record_feed_event\(\s*[^,]+,\s*"[a-z]+",\s*"([a-z_]+)"', code))
    emitted |= set(re.findall(r'\[\("([a-z_]+)", prepare_database_folder', code))
    emitted |= set(re.findall(r'kind = "([a-z_]+)" if "429"[^"]*"([a-z_]+)"', code)[0])
    assert {
        "start",
        "stop",
        "parse_error",
        "landing_damaged",
        "run_failed",
        "landing_moved",
    } <= emitted
    page = (ROOT / "docs" / "operating.md").read_text()
    missing = sorted(k for k in emitted if f"`{k}`" not in page)
    assert not missing, f"docs/operating.md does not explain: {missing}"
