"""The README and docs/ name only what exists: every relative link (and its #anchor), every
image, and every repository path written in backticks or in a code block. The README stays a front page (at most 200 lines)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 200

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # [text](target) and ![alt](target)
CODE_SPAN = re.compile(r"`([^`\n]+)`")
FENCE = re.compile(r"^(```|~~~)")
FILE_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,9}$")
# Paths of the user's own files in examples (a run directory, a model folder made in the
# tour, a placeholder): named in commands, never part of the repository.
USER_PLACES = ("runs/", "tiny-llama/", "path/to/")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks: commands there are run, not linked."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def anchors(path: Path) -> set[str]:
    """The #anchors a markdown file's headings get (GitHub's rule)."""
    found: set[str] = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).lower().replace("`", "")).replace(" ", "-")
            found.add(slug)
    return found


def broken_links(path: Path, folder: Path | None = None) -> list[str]:
    """Links whose file or heading is missing; relative links resolve from `folder` (the page's)."""
    folder = folder or path.parent
    problems = []
    for number, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:: not checked here (nothing is fetched)
            file_part, _, anchor = target.partition("#")
            linked = (folder / file_part).resolve() if file_part else path
            where = f"{path.name}:{number}: ({target})"
            if not linked.exists():
                problems.append(f"{where} names a missing file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                problems.append(f"{where} names a missing heading")
    return problems


PATH_CHARACTERS = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")


def looks_like_a_repository_path(word: str) -> bool:
    """A word is checked when it reads as a path in this repository: it has a slash and a file
    extension, or it starts with a top-level folder of the repository."""
    if not PATH_CHARACTERS.match(word) or "..." in word:
        return False  # a glob, a placeholder, a variable, a call, a home or absolute path
    if word.startswith(USER_PLACES):
        return False
    if "/" not in word:
        return False
    top = word.split("/", 1)[0]
    return bool(FILE_EXTENSION.search(word.rstrip("/"))) or (ROOT / top).is_dir()


def missing_paths(path: Path) -> list[str]:
    """Repository paths named in backticks, or in code blocks (commands, trees), that do not exist."""
    problems = []
    words: list[tuple[int, str]] = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif fenced:
            words += [(number, word) for word in line.split()]
        else:
            words += [(number, word) for span in CODE_SPAN.findall(line) for word in span.split()]
    for number, word in words:
        word = word.strip("\"'(),;:")
        if looks_like_a_repository_path(word) and not (ROOT / word).exists():
            problems.append(f"{path.name}:{number}: `{word}` does not exist")
    return problems


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_and_named_path_exists(path: Path):
    assert broken_links(path) + missing_paths(path) == []


def test_the_docs_named_by_the_readme_exist():
    for name in ("design", "benchmarks", "training", "gpu-check", "architecture"):
        assert (ROOT / "docs" / f"{name}.md").is_file()


def test_the_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES
    # It opens with the two commands for a fresh machine.
    assert lines[2:6] == ["```sh", "python3 install.py && python3 main.py",
                          "python3 install.py --test && python3 -m pytest", "```"]


def test_a_broken_link_or_path_is_found(tmp_path: Path):
    # The checks must be able to fail: design.md passes, and the same page with a link to a
    # missing page, a link to a missing heading and a missing module named does not.
    page = ROOT / "docs" / "design.md"
    assert broken_links(page) == [] and missing_paths(page) == []
    broken = tmp_path / "design.md"
    broken.write_text(page.read_text(encoding="utf-8") + "\nSee [gone](no-such-page.md), "
                      "[here](architecture.md#no-such-heading) and `core/planning/no_such_module.py`.\n",
                      encoding="utf-8")
    found = broken_links(broken, folder=ROOT / "docs") + missing_paths(broken)
    assert len(found) == 3
    assert "no-such-page.md" in found[0] and "no-such-heading" in found[1] and "no_such_module.py" in found[2]


def test_the_module_map_names_every_module():
    # docs/architecture.md's map is how a newcomer finds a module: a module added or renamed
    # under core/, gui/ or cli/ is named there too.
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\w+", page))
    modules = [path for folder in ("core", "gui", "cli") for path in sorted((ROOT / folder).rglob("*.py"))
               if path.name != "__init__.py"]
    assert [str(path.relative_to(ROOT)) for path in modules if path.stem not in named] == []


CITATION = re.compile(r"""docs/([\w-]+\.md)(?:, |'s | \()?(?:"([^"]+)")?""")


def test_what_the_code_cites_in_docs_exists():
    # Docstrings and comments cite docs/<page>.md, often with a section: 'docs/design.md,
    # "Cost model v2"'. The page and the section exist.
    problems = []
    sources = [path for folder in ("core", "gui", "cli", "benchmarks", "tests")
               for path in sorted((ROOT / folder).rglob("*.py"))] + [ROOT / "main.py", ROOT / "pyproject.toml"]
    titles = {page.name: _heading_titles(page) for page in (ROOT / "docs").glob("*.md")}
    cited = 0
    for path in sources:
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page, section in CITATION.findall(line):
                cited += 1
                where = f"{path.relative_to(ROOT)}:{number}"
                if page not in titles:
                    problems.append(f"{where}: docs/{page} does not exist")
                elif section and section not in titles[page]:
                    problems.append(f"{where}: docs/{page} has no section '{section}'")
    assert problems == []
    assert cited >= 20  # the citations are found at all


def _heading_titles(path: Path) -> set[str]:
    return {m.group(1).replace("`", "") for _, line in prose_lines(path.read_text(encoding="utf-8"))
            if (m := re.match(r"^#{1,6}\s+(.*?)\s*$", line))}
