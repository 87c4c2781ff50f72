"""The documents stay true to their sources: the README's benchmark table is the generated one, every decision record
is listed and in the site's navigation, the README stays short, and the package keeps its docstring examples."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _table_rows(text: str) -> list:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_the_readme_benchmark_table_is_the_generated_suite_table():
    bench = (ROOT / "benchmarks" / "README.md").read_text()
    block = re.search(r"<!-- QUALITY_SUITE_QUICK:START -->(.*?)<!-- QUALITY_SUITE_QUICK:END -->", bench, re.S)
    assert block is not None, "benchmarks/README.md has no QUALITY_SUITE_QUICK block"
    generated = _table_rows(block.group(1))
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Benchmarks"):readme.index("## Two commands")]
    assert generated and _table_rows(section) == generated


def test_every_decision_record_is_indexed_and_in_the_site_navigation():
    records = sorted(p.name for p in (ROOT / "docs" / "decisions").glob("[0-9][0-9][0-9][0-9]-*.md"))
    index = (ROOT / "docs" / "decisions" / "index.md").read_text()
    nav = (ROOT / "mkdocs.yml").read_text()
    assert records
    assert [n for n in records if f"({n})" not in index] == []
    assert [n for n in records if f"decisions/{n}" not in nav] == []
    numbers = [int(n[:4]) for n in records]
    assert numbers == list(range(1, len(records) + 1)), "decision numbers run 0001, 0002, ... without gaps"


def test_the_readme_is_short_and_has_its_sections():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) <= 8 * 1024
    for heading in ("## Install", "## The callback", "## The sampler", "## The CLI", "## Two commands"):
        assert heading in readme


#: Modules whose docstrings carry worked examples (``make test`` runs them with ``--doctest-modules``).
WITH_EXAMPLES = ("lightning_ldam.sampling.discriminator", "lightning_ldam.sampling.config",
                 "lightning_ldam.sampling.targets", "lightning_ldam.sampling.diagnostics",
                 "lightning_ldam.report.render", "lightning_ldam.weights.ema")


def test_the_package_keeps_its_docstring_examples():
    """--doctest-modules passes on a module with no examples: this fails if one of these loses them."""
    import doctest
    import importlib

    counts = {name: sum(len(t.examples) for t in doctest.DocTestFinder().find(importlib.import_module(name)))
              for name in WITH_EXAMPLES}
    assert all(counts.values()), counts
