"""The package's layers, enforced: which subpackage may import which, and where Lightning may be imported.

sampling  <- report, weights  <- engine  <- callback, cli
(an arrow points from what is imported to what imports it; nothing imports upward)
"""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import lightning_ldam
from lightning_ldam.callback import LDAMCallback
from lightning_ldam.callback.ldam_callback import LDAMCallback as Defined

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lightning_ldam"
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
#: subpackage -> the lightning_ldam subpackages and top-level modules it must not import
FORBIDDEN = {
    "sampling": ("weights", "engine", "report", "callback", "cli"),
    "report": ("weights", "engine", "callback", "cli"),
    "weights": ("engine", "report", "callback", "cli"),
    "engine": ("callback", "cli"),
}
#: the only modules that import Lightning
LIGHTNING_MODULES = {"callback/ldam_callback.py", "callback/standalone.py"}


def _imports(path: pathlib.Path):
    """Every module name ``path`` imports (at any depth: function-level imports count too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            if node.module == "lightning_ldam":
                yield from (f"lightning_ldam.{alias.name}" for alias in node.names)


def _modules(sub: str = ""):
    return sorted((PACKAGE / sub).rglob("*.py"))


@pytest.mark.parametrize("sub", sorted(FORBIDDEN))
def test_a_subpackage_imports_no_layer_above_it_and_no_lightning(sub):
    bad = []
    for path in _modules(sub):
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] in LIGHTNING or (parts[0] == "lightning_ldam" and len(parts) > 1
                                         and parts[1] in FORBIDDEN[sub]):
                bad.append(f"{path.relative_to(PACKAGE)} imports {name}")
    assert not bad, "\n".join(bad)


def test_lightning_is_imported_by_the_callback_modules_alone():
    importers = {str(p.relative_to(PACKAGE)) for p in _modules()
                 if any(n.split(".")[0] in LIGHTNING for n in _imports(p))}
    assert importers == LIGHTNING_MODULES


def test_the_layer_rule_catches_an_upward_import(tmp_path):
    """The check itself can fail: a sampling module that imports the report layer is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from lightning_ldam.report import metrics\n    import lightning.pytorch\n")
    names = list(_imports(bad))
    assert "lightning_ldam.report" in names and "lightning.pytorch" in names


def test_sampling_runs_without_importing_lightning():
    code = ("import sys, torch, lightning_ldam as ldam\n"
            "net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))\n"
            "ldam.sample(net, '1:0', input_shape=(1, 4, 4), chains=2, steps=4)\n"
            "import lightning_ldam.report.tags, lightning_ldam.engine.rounds, lightning_ldam.cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in %r))" % (LIGHTNING,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_entry_points_stay_where_users_import_them():
    assert LDAMCallback is Defined is lightning_ldam.LDAMCallback
    assert lightning_ldam.sample.__module__ == "lightning_ldam.sampling.api"


#: The longest a function may be (lines, its docstring not counted) and the most parameters it may take (``self``
#: and ``cls`` not counted): a longer one is missing an object, not a cut.
MAX_FUNCTION_LINES, MAX_PARAMETERS = 60, 8


def _oversized(path: pathlib.Path, root: pathlib.Path = PACKAGE):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        first = node.body[0]
        doc = (first.end_lineno - first.lineno + 1 if isinstance(first, ast.Expr)
               and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str) else 0)
        lines = node.end_lineno - node.lineno + 1 - doc
        a = node.args
        names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs] + [x.arg for x in (a.vararg, a.kwarg) if x]
        params = len([n for n in names if n not in ("self", "cls")])
        if lines > MAX_FUNCTION_LINES or params > MAX_PARAMETERS:
            yield f"{path.relative_to(root)}:{node.lineno} {node.name}: {lines} lines, {params} parameters"


def test_no_function_is_over_60_lines_or_takes_over_8_parameters():
    found = [line for path in _modules() for line in _oversized(path)]
    assert not found, "\n".join(found)


def test_the_size_rule_catches_a_long_function(tmp_path):
    long = tmp_path / "long.py"
    long.write_text("def f(a, b, c, d, e, f, g, h, i):\n" + "    x = 1\n" * 61)
    assert [line.split(": ", 1)[1] for line in _oversized(long, tmp_path)] == ["62 lines, 9 parameters"]


def test_no_test_module_imports_another():
    """Shared code lives in tests/helpers; a test module imports no other test module (nor conftest)."""
    tests = pathlib.Path(__file__).resolve().parent
    bad = [f"{path.name} imports {name}" for path in sorted(tests.glob("*.py")) for name in _imports(path)
           if name.split(".")[0] == "conftest" or name.split(".")[0].startswith("test_")]
    assert not bad, "\n".join(bad)
