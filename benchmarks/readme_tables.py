"""Write a benchmark's table into benchmarks/README.md between its ``<!-- MARKER:START/END -->`` comments."""
from __future__ import annotations

import fcntl
import os
import re
import shlex
from typing import List

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")


def command_line(script: str, argv: List[str]) -> str:
    """The command that made a table (``python benchmarks/SCRIPT ARGS``, quoted for a shell), as its footer names it."""
    return " ".join([f"python benchmarks/{script}"] + [shlex.quote(a) for a in argv])


def write_section(text: str, marker: str, heading: str, path: str = README) -> None:
    """Put ``text`` between ``marker``'s START/END comments in ``path``, or append it under ``## heading`` the first
    time. Holds an exclusive lock on the file while it reads and rewrites it: benchmarks run side by side do not
    lose each other's tables."""
    start, end = f"<!-- {marker}:START -->", f"<!-- {marker}:END -->"
    block = f"{start}\n{text}{end}"
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        doc = f.read() or "# Benchmarks\n"
        if start in doc:
            doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: block, doc, flags=re.S)
        else:
            doc = doc.rstrip("\n") + f"\n\n## {heading}\n\n{block}\n"
        f.seek(0)
        f.truncate()
        f.write(doc)
