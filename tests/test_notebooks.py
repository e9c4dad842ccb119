"""The notebooks run top to bottom, and their committed outputs are not stale.

Each notebook states what it needs in ``metadata.verbcal.needs``:
``"recorded_data"`` (``shared/data/llm-confidence``) or ``"local_server"``
(llama-cpp-python and the SmolLM2 weights). A notebook whose needs are missing
is skipped with the reason, except in CI (``CI`` set), where it fails.

Refresh the committed outputs with ``.venv/bin/python scripts/refresh_notebooks.py``.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


try:
    import ipykernel  # noqa: F401  (the kernel the notebooks run in)
    import nbformat
    from nbclient.exceptions import CellExecutionError
except ImportError as error:
    if in_ci():
        raise ImportError(f"{error}: CI must install nbclient, nbformat and ipykernel") from None
    pytest.skip(f"cannot run notebooks here: {error}", allow_module_level=True)

from recorded import find_recorded_data  # noqa: E402

from verbcal.elicit.local_server import check_llama_cpp_server, find_smollm2_model  # noqa: E402
from verbcal.errors import ConfigurationError  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "refresh_notebooks.py"
_spec = importlib.util.spec_from_file_location("refresh_notebooks", SCRIPT)
refresh = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(refresh)

NOTEBOOKS = sorted(refresh.NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {
    "01_calibrate_a_closed_api_model.ipynb",
    "02_contextual_vs_temperature_vs_batch.ipynb",
    "03_precision_recall_thresholds.ipynb",
    "04_decisions.ipynb",
}


KNOWN_NEEDS = {"recorded_data", "local_server"}


def missing(need: str) -> str | None:
    """Why ``need`` is not available here, or None when it is."""
    if need == "recorded_data":
        if find_recorded_data() is None:
            return "recorded LLM answers not found (shared/data/llm-confidence)"
        return None
    if need == "local_server":
        try:
            check_llama_cpp_server()
            find_smollm2_model()
        except ConfigurationError as error:
            return f"no local model server: {error}"
        return None
    raise AssertionError(f"unknown need {need!r}")


def read(path: Path):
    return nbformat.read(path, as_version=4)


def needs_of(nb) -> list[str]:
    return nb.metadata.get("verbcal", {}).get("needs", [])


def run_params() -> list:
    """One param per notebook; those needing the local model also carry the ``server`` mark."""
    params = []
    for path in NOTEBOOKS:
        marks = [pytest.mark.server] if "local_server" in needs_of(read(path)) else []
        params.append(pytest.param(path, marks=marks, id=path.stem))
    return params


def code_cells(nb) -> list:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def output_kinds(cell) -> set[str]:
    """What a cell shows (stdout, a result, a display); stderr noise such as warnings aside."""
    kinds = {out.get("name", out.output_type) for out in cell.outputs}
    return kinds - {"stderr"}


def test_every_expected_notebook_is_there():
    absent = EXPECTED - {path.name for path in NOTEBOOKS}
    assert not absent, f"missing notebooks: {sorted(absent)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_committed_outputs_are_fresh(path):
    problems = refresh.staleness_problems(read(path))
    assert not problems, f"{path.name}: {'; '.join(problems)}; run scripts/refresh_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_needs_are_known(path):
    assert set(needs_of(read(path))) <= KNOWN_NEEDS


# ------------------------------------------------------------ the staleness check itself


@pytest.fixture
def fresh_notebook():
    """A small notebook as the refresh script saves it."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell("print(1)", execution_count=1),
        nbformat.v4.new_code_cell("print(2)", execution_count=2),
    ]
    for cell, text in zip(nb.cells[1:], ("1\n", "2\n"), strict=True):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    nb.metadata["verbcal"] = {"source_sha256": refresh.source_digest(nb)}
    return nb


def _edit_source(nb):
    nb.cells[2].source = "print(3)"


def _edit_markdown(nb):
    nb.cells[0].source = "# another title"


def _clear_outputs(nb):
    nb.cells[2].outputs = []


def _out_of_order(nb):
    nb.cells[1].execution_count, nb.cells[2].execution_count = 2, 1


def _run_twice(nb):
    nb.cells[2].execution_count = 3


def _never_run(nb):
    for cell in code_cells(nb):
        cell.execution_count, cell.outputs = None, []


def _saved_error(nb):
    nb.cells[2].outputs = [nbformat.v4.new_output("error", ename="E", evalue="x", traceback=[])]


def _no_digest(nb):
    del nb.metadata["verbcal"]


def test_staleness_check_passes_a_fresh_notebook(fresh_notebook):
    assert refresh.staleness_problems(fresh_notebook) == []


@pytest.mark.parametrize(
    "edit, message",
    [
        (_edit_source, "sources changed"),
        (_edit_markdown, "sources changed"),
        (_clear_outputs, "code cell 2 has no outputs"),
        (_out_of_order, r"execution counts are \[2, 1\]"),
        (_run_twice, r"execution counts are \[1, 3\]"),
        (_never_run, "code cell 1 has no outputs"),
        (_saved_error, "code cell 2 saved an error"),
        (_no_digest, "sources changed"),
    ],
)
def test_staleness_check_catches(fresh_notebook, edit, message):
    edit(fresh_notebook)
    problems = refresh.staleness_problems(fresh_notebook)
    assert any(re.search(message, problem) for problem in problems), problems


# ------------------------------------------------------------ running them


def test_execute_runs_in_the_working_directory(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import os\nprint(os.getcwd())")]
    executed = refresh.execute(nb, tmp_path)
    assert executed.cells[0].outputs[0].text.strip() == str(tmp_path)
    assert executed.cells[0].execution_count == 1
    assert nb.cells[0].outputs == []  # the input notebook is left alone


def test_execute_fails_on_the_first_failing_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in ("1 / 0", "print('never')")]
    with pytest.raises(CellExecutionError, match="ZeroDivisionError"):
        refresh.execute(nb, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("path", run_params())
def test_notebook_runs_top_to_bottom(path, tmp_path):
    committed = read(path)
    for need in needs_of(committed):
        reason = missing(need)
        if reason and in_ci():
            pytest.fail(f"{path.name} needs {need}: {reason} (CI is set: it must be there)")
        if reason:
            pytest.skip(f"{path.name} needs {need}: {reason}")

    # Raises CellExecutionError (with the cell and its traceback) on the first failing cell,
    # and RuntimeError when the kernel is not this interpreter's.
    executed = refresh.execute(committed, tmp_path)

    assert [(c.cell_type, c.source) for c in executed.cells] == [
        (c.cell_type, c.source) for c in committed.cells
    ]
    assert refresh.staleness_problems(executed) == []
    for number, (old, new) in enumerate(
        zip(code_cells(committed), code_cells(executed), strict=True), start=1
    ):
        assert output_kinds(new) == output_kinds(old), (
            f"code cell {number} now outputs {output_kinds(new)}, the committed notebook has "
            f"{output_kinds(old)}: run scripts/refresh_notebooks.py"
        )
