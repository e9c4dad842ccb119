"""The public surface: every exported name resolves, every documented import path works.

Documented paths are read from the README and the notebooks themselves (code
blocks and cells, and dotted ``verbcal.…`` names in backticks), so a rename that
forgets the documentation fails here.
"""

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import verbcal

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: The subpackages whose ``__init__`` is their public face.
SUBPACKAGES = ("verbcal.elicit", "verbcal.calibrators", "verbcal.metrics", "verbcal.report")
#: Public modules with an ``__all__`` of their own.
MODULES = (
    "verbcal.thresholds",
    "verbcal.validation",
    "verbcal.metrics.intervals",
    "verbcal.guarantee",
    "verbcal.selective",
    "verbcal.conformal",
    "verbcal.decisions",
    "verbcal.routing",
)


def test_every_public_name_resolves():
    for name in verbcal.__all__:
        assert getattr(verbcal, name) is not None, name


@pytest.mark.parametrize("module_name", SUBPACKAGES + MODULES)
def test_every_name_of_a_subpackage_all_imports(module_name):
    module = importlib.import_module(module_name)
    assert module.__all__, module_name
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    for name in module.__all__:
        namespace: dict = {}
        exec(f"from {module_name} import {name}", namespace)
        assert namespace[name] is getattr(module, name)


def test_errors_form_one_hierarchy():
    for name in ("BackendError", "ConfigurationError", "InvalidInputError", "ParseError"):
        assert issubclass(getattr(verbcal, name), verbcal.VerbcalError)
    assert issubclass(verbcal.InvalidInputError, ValueError)
    assert issubclass(verbcal.ConfigurationError, ValueError)
    # An unreadable file is bad input: code catching InvalidInputError catches it too.
    assert issubclass(verbcal.ParseError, verbcal.InvalidInputError)


def test_core_math_does_not_import_the_http_client_or_plotting():
    code = (
        "import sys, verbcal, verbcal.metrics, verbcal.thresholds; "
        "print(sorted(m for m in ('openai', 'matplotlib', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- documentation


def _readme_code_and_prose() -> tuple[list[str], str]:
    text = README.read_text(encoding="utf-8")
    # A block runs from a line "```python" to a line "```" (fences inside strings do not count).
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    return blocks, text


def _notebook_code_and_prose(path: Path) -> tuple[list[str], str]:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    code, prose = [], []
    for cell in cells:
        source = "".join(cell["source"])
        if cell["cell_type"] == "code":
            # IPython magics and shell escapes are not Python.
            lines = [
                line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))
            ]
            code.append("\n".join(lines))
        else:
            prose.append(source)
    return code, "\n".join(prose)


def _documents() -> list[tuple[str, list[str], str]]:
    docs = [("README.md", *_readme_code_and_prose())]
    docs += [(path.name, *_notebook_code_and_prose(path)) for path in NOTEBOOKS]
    return docs


def _imports(code: str) -> list[str]:
    """Every ``import verbcal…`` / ``from verbcal… import …`` statement of a code block."""
    statements = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "verbcal":
            names = ", ".join(alias.name for alias in node.names)
            statements.append(f"from {node.module} import {names}")
        elif isinstance(node, ast.Import):
            statements += [f"import {a.name}" for a in node.names if a.name.startswith("verbcal")]
    return statements


def _dotted_names(prose: str) -> list[str]:
    """``verbcal.x.y`` names written in backticks (a trailing call ``()`` dropped)."""
    return sorted(set(re.findall(r"`(verbcal(?:\.\w+)+)(?:\(\))?`", prose)))


DOCUMENTS = _documents()


def test_the_documents_are_found():
    assert README.is_file() and len(NOTEBOOKS) >= 3
    assert all(_imports("\n".join(code)) for _, code, _ in DOCUMENTS)


@pytest.mark.parametrize(
    "statement",
    sorted({s for _, code, _ in DOCUMENTS for block in code for s in _imports(block)}),
)
def test_documented_import_statements_work(statement):
    exec(statement, {})


@pytest.mark.parametrize(
    "dotted", sorted({name for _, _, prose in DOCUMENTS for name in _dotted_names(prose)})
)
def test_documented_dotted_names_resolve(dotted):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            target = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attribute in parts[cut:]:
            target = getattr(target, attribute)
        return
    pytest.fail(f"{dotted} names no module")


def test_no_module_imports_a_private_name_of_another():
    offenders = []
    paths = [p for folder in ("verbcal", "bench", "scripts") for p in (ROOT / folder).rglob("*.py")]
    for path in sorted(paths):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("verbcal"):
                private = [a.name for a in node.names if a.name.startswith("_")]
                private = [name for name in private if name != "__version__"]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}: {node.module} {private}")
    assert offenders == []
