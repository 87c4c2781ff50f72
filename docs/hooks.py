"""MkDocs hooks: the tag page's table from the one table in code, and files kept outside docs/ (the changelog and
the benchmarks' images) added to the site."""
from __future__ import annotations

import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Files outside docs/ the site serves, by their path from the repository root.
OUTSIDE = {"CHANGELOG.md": "changelog.md", "benchmarks/README.md": "benchmarks/tables.md",
           **{f"benchmarks/{p.name}": f"benchmarks/{p.name}" for p in sorted((ROOT / "benchmarks").glob("*.png"))}}
TAGS_MARKER = "<!-- TAGS -->"
SUITE_MARKER = "<!-- SUITE -->"


def on_files(files, config):
    for path, dest in OUTSIDE.items():
        files.append(File.generated(config, dest, abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "benchmarks/tables.md":  # benchmarks/README.md links into docs/ from outside it
        return markdown.replace("](../docs/", "](../")
    if SUITE_MARKER in markdown:
        return markdown.replace(SUITE_MARKER, suite_table())
    if TAGS_MARKER not in markdown:
        return markdown
    from lightning_ldam.report.tags import TAGS

    rows = ["| tag | kind | shows |", "|---|---|---|"]
    rows += [f"| `{t.pattern}` | {t.kind} | {t.shows.replace('|', '&#124;')} |" for t in TAGS]
    return markdown.replace(TAGS_MARKER, "\n".join(rows))


def suite_table() -> str:
    """The quick suite's table as benchmarks/quality.py last wrote it."""
    text = (ROOT / "benchmarks" / "README.md").read_text()
    start, end = "<!-- QUALITY_SUITE_QUICK:START -->", "<!-- QUALITY_SUITE_QUICK:END -->"
    return text[text.index(start) + len(start):text.index(end)].strip()
