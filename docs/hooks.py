"""MkDocs hooks: the tag page's table from the one table in code, and files kept outside docs/ (the changelog and
the benchmarks' images) added to the site."""
from __future__ import annotations

import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parents[1]
#: Files outside docs/ the site serves, by their path from the repository root.
OUTSIDE = ["CHANGELOG.md", *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "benchmarks").glob("*.png")))]
TAGS_MARKER = "<!-- TAGS -->"


def on_files(files, config):
    for path in OUTSIDE:
        dest = "changelog.md" if path == "CHANGELOG.md" else path
        files.append(File.generated(config, dest, abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    if TAGS_MARKER not in markdown:
        return markdown
    from lightning_ldam.report.tags import TAGS

    rows = ["| tag | kind | shows |", "|---|---|---|"]
    rows += [f"| `{t.pattern}` | {t.kind} | {t.shows.replace('|', '&#124;')} |" for t in TAGS]
    return markdown.replace(TAGS_MARKER, "\n".join(rows))
