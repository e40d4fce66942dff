"""README.md and docs/*.md: every command they show exists, every relative link and named source file resolves, the
README stays under 8 KB, and its stage diagram is the one tasks/stages.py draws. Offline and in-process."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
from pathlib import Path
from unittest import mock

import pytest

from flows.cli import main
from tasks.stages import DIAGRAM_END, DIAGRAM_START, render_mermaid
from tests.conftest import REPO

README = REPO / "README.md"
PAGES = (README, *sorted((REPO / "docs").glob("*.md")))
README_LIMIT = 8192

FENCED = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
INLINE = re.compile(r"`([^`\n]+)`")
OPTIFLOW = re.compile(r"(?<![\w.-])(?:optiflow|python -m flows)((?:[ \t]+[a-z][a-z0-9-]*){1,2})")
OLD_ENTRY_POINTS = re.compile(r"python -m flows\.\w+")
MAKE = re.compile(r"(?<![\w.-])make[ \t]+([a-z][a-z0-9-]*)")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_.-]+)[ \t]*:(?!=)", re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SOURCE_FILE = re.compile(r"(?<![\w./-])((?:optiflow|tasks|flows|tools|bench|tests)/[\w/]+\.py)(?:::(\w+))?")


def shown_code(page: Path) -> list[str]:
    """What a page shows as code: each fenced block's lines (comments dropped, continuations joined), then each
    inline code span outside the blocks."""
    text = page.read_text(encoding="utf-8")
    snippets = []
    for block in FENCED.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            snippets.append(re.sub(r"(^|\s)#.*$", "", line))
    return snippets + INLINE.findall(FENCED.sub("", text))


def prose(page: Path) -> str:
    """A page without its code, where links and headings live."""
    return INLINE.sub("", FENCED.sub("", page.read_text(encoding="utf-8")))


def shown(pattern: re.Pattern[str]) -> dict[str, set[str]]:
    """Each match of ``pattern`` in the pages' code, with the pages that show it."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for snippet in shown_code(page):
            for match in pattern.finditer(snippet):
                found.setdefault(" ".join(match.group(1).split()), set()).add(str(page.relative_to(REPO)))
    return found


COMMANDS = shown(OPTIFLOW)
MAKE_TARGETS = shown(MAKE)


def exits_with(argv: list[str]) -> int:
    """Run the CLI in this process; --help exits through SystemExit."""
    with (
        mock.patch.dict(os.environ),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        try:
            return main(argv)
        except SystemExit as exc:
            return int(exc.code or 0)


def test_the_pages_show_the_main_commands() -> None:
    assert {"train", "predict", "serve-api", "docs"} <= set(COMMANDS)
    assert {"run", "test"} <= set(MAKE_TARGETS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_optiflow_command_shown_exists(command: str) -> None:
    """`optiflow A B` or `python -m flows A B`: `A B --help` must exit 0 (B is checked when A takes a choice)."""
    pages = sorted(COMMANDS[command])
    assert exits_with([*command.split(), "--help"]) == 0, f"`optiflow {command} --help` fails; shown in {pages}"


def test_no_page_shows_the_old_entry_points() -> None:
    old = {str(page.relative_to(REPO)): OLD_ENTRY_POINTS.findall(page.read_text(encoding="utf-8")) for page in PAGES}
    assert not {name: forms for name, forms in old.items() if forms}, "use `python -m flows CMD` (or `optiflow CMD`)"


def test_every_make_target_shown_exists() -> None:
    targets = set(MAKE_TARGET.findall((REPO / "Makefile").read_text(encoding="utf-8")))
    missing = {target: sorted(pages) for target, pages in MAKE_TARGETS.items() if target not in targets}
    assert not missing, f"make targets not in the Makefile: {missing}"


def test_readme_stays_under_8_kb() -> None:
    assert len(README.read_bytes()) <= README_LIMIT


def test_readme_diagram_is_the_one_the_stage_list_draws() -> None:
    text = README.read_text(encoding="utf-8")
    block = text[text.index(DIAGRAM_START) + len(DIAGRAM_START) : text.index(DIAGRAM_END)]
    assert block == f"\n```mermaid\n{render_mermaid()}```\n", "run `optiflow docs` and commit README.md"
    assert exits_with(["docs", "--check", "--readme", str(README)]) == 0


def test_docs_command_redraws_a_stale_diagram(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    text = readme.read_text(encoding="utf-8")
    stale = text.replace(render_mermaid(), "flowchart LR\n    ingest --> split\n")
    assert stale != text
    readme.write_text(stale, encoding="utf-8")
    assert exits_with(["docs", "--check", "--readme", str(readme)]) == 2
    assert exits_with(["docs", "--readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == text


def slugs(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    anchors = set()
    for heading in HEADING.findall(FENCED.sub("", page.read_text(encoding="utf-8"))):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(prose(page)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):
                continue  # http(s), mailto
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in slugs(file):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, broken


def test_every_source_file_and_test_named_exists() -> None:
    missing = []
    for page in PAGES:
        for snippet in shown_code(page):
            for path, name in SOURCE_FILE.findall(snippet):
                file = REPO / path
                if not file.is_file():
                    missing.append(f"{page.relative_to(REPO)}: {path}")
                elif name and not re.search(rf"^\s*def {name}\b", file.read_text(encoding="utf-8"), re.M):
                    missing.append(f"{page.relative_to(REPO)}: {path}::{name}")
    assert not missing, missing


def test_make_help_is_plain_text_when_piped() -> None:
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    listing = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "\x1b[" not in listing and "  run " in listing and "  help " in listing
