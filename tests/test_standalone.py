"""A clone of this repository stands alone: no test, code or doc needs files from outside it.

The real IBKR captures the tests use are in ``tests/fixtures/ibkr`` with their provenance, and the IBKR
facts the code relies on are in ``docs/ibkr-api.md``. These checks keep it that way: nothing may read
or cite a directory beside the clone, or a reference the repository does not ship.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import PAYLOADS, payload

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("ibkr_tasks", "flows", "tests", "bench", "docs", "migrations")
SCANNED_FILES = ("README.md", "Makefile", "prefect.yaml", "pyproject.toml", "alembic.ini")
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".mako", ""}

# Built from pieces so this file does not match its own patterns.
_SHARED = "sha" + "red"
FORBIDDEN = {
    "a path beside the clone (../" + _SHARED + ")": re.compile(r"\.\./" + _SHARED + r"\b"),
    "the " + _SHARED + "/ payload or reference tree": re.compile(
        r"\b" + _SHARED + r"/(?:ibkr|payloads)\b|/work/" + _SHARED + r"\b"
    ),
    "a path joined onto a '" + _SHARED + "' directory": re.compile(r"""["']""" + _SHARED + r"""["']\s*/"""),
    "a citation of a reference the repository does not ship": re.compile(
        r"api-" + r"reference|\b" + "brie" + "fs/"
    ),
    "a section sign citing an outside document": re.compile("\u00a7"),
    "a citation of a tracker issue number": re.compile(r"\b[Ii]ssue " + r"\d+"),
}


def scanned_files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for directory in SCANNED_DIRS:
        for path in sorted((ROOT / directory).rglob("*")):
            if not path.is_file() or "__pycache__" in path.parts or path.suffix not in TEXT_SUFFIXES:
                continue
            files.append(path)
    return files


def test_the_scan_covers_code_tests_docs_and_fixtures() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    for expected in (
        "ibkr_tasks/client/transport.py",
        "flows/nightly_reconciliation.py",
        "tests/conftest.py",
        "bench/pacing.py",
        "docs/ibkr-api.md",
        "tests/fixtures/ibkr/PROVENANCE.md",
        "ibkr_tasks/data/prompt_policy.json",
    ):
        assert expected in names


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_no_file_refers_to_anything_outside_the_clone(what: str) -> None:
    pattern = FORBIDDEN[what]
    hits = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, f"{what}; cite docs/ibkr-api.md#<section> or tests/fixtures instead:\n" + "\n".join(hits)


def test_the_patterns_catch_what_they_are_for() -> None:
    samples = {
        'PAYLOADS = Path(__file__).parents[2] / "' + _SHARED + '" / "ibkr" / "payloads"': 1,
        "see ../" + _SHARED + "/ibkr/api-" + "reference.md": 1,
        "(api-" + "reference \u00a74.3)": 1,
        "rules from an audit (is" + "sue 3)": 1,
        "one " + _SHARED + " limiter per host": 0,
        "docs/ibkr-api.md#trades": 0,
    }
    for line, expected in samples.items():
        assert any(p.search(line) for p in FORBIDDEN.values()) == bool(expected), line


def test_every_capture_names_its_source() -> None:
    captures = sorted(PAYLOADS.glob("*.json"))
    assert len(captures) >= 10
    listed = (PAYLOADS / "PROVENANCE.md").read_text(encoding="utf-8")
    for capture in captures:
        src = capture.with_suffix(".src.txt")
        assert src.is_file(), f"{capture.name} has no {src.name}"
        fields = dict(
            line.split(":", 1) for line in src.read_text(encoding="utf-8").splitlines() if ":" in line
        )
        for key in ("endpoint", "repo", "path", "commit"):
            assert fields.get(key, "").strip(), f"{src.name} lacks {key}:"
        assert re.match(r"\s*[0-9a-f]{40}\b", fields["commit"]), f"{src.name}: commit is not a full hash"
        assert f"`{capture.name}`" in listed, f"{capture.name} is not listed in PROVENANCE.md"
        assert payload(capture.name) is not None


def test_a_missing_capture_fails_the_test_instead_of_skipping_it() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"no_such_capture\.json"):
        payload("no_such_capture.json")


def test_cited_sections_of_the_api_notes_exist() -> None:
    doc = (ROOT / "docs" / "ibkr-api.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r'<a id="([\w-]+)"></a>', doc))
    cited: dict[str, list[str]] = {}
    for path in scanned_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"ibkr-api\.md((?:#[\w-]+)(?:,\s*#[\w-]+)*)", text):
            for anchor in re.findall(r"#([\w-]+)", match.group(1)):
                cited.setdefault(anchor, []).append(str(path.relative_to(ROOT)))
    assert cited, "no file cites docs/ibkr-api.md"
    missing = {a: sorted(set(where)) for a, where in cited.items() if a not in anchors}
    assert not missing, f"cited sections missing from docs/ibkr-api.md: {missing}"
