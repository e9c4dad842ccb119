"""Re-execute the notebooks in ``notebooks/`` and save them with fresh outputs.

    .venv/bin/python scripts/refresh_notebooks.py              # every notebook
    .venv/bin/python scripts/refresh_notebooks.py notebooks/02_*.ipynb
    .venv/bin/python scripts/refresh_notebooks.py --check      # report stale ones, change nothing

Each notebook runs top to bottom in a fresh kernel of this interpreter, with a
new temporary folder as its working directory (so the files it writes never
land in the repository). The saved notebook records a SHA-256 of its cell
sources in ``metadata.verbcal.source_sha256``: ``tests/test_notebooks.py``
recomputes it to tell whether the committed outputs came from the committed
sources. Edit a notebook, then run this script before committing it.

Needs ``nbclient``, ``nbformat`` and ``ipykernel``.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL_NAME = "python3"
#: Seconds one cell may run (the local-model notebook elicits for a minute or two).
CELL_TIMEOUT = 900
#: Appended to every run, then removed: proves the kernel runs in this interpreter's prefix.
PREFIX_PROBE = "import sys\nprint(sys.prefix)"


def source_digest(nb: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook's cell types and sources, in order."""
    cells = [[cell.cell_type, cell.source] for cell in nb.cells]
    return hashlib.sha256(json.dumps(cells).encode("utf-8")).hexdigest()


def execute(nb: nbformat.NotebookNode, workdir: Path) -> nbformat.NotebookNode:
    """A copy of ``nb`` executed top to bottom in a fresh kernel, with ``workdir`` as cwd.

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell,
    and RuntimeError when the kernel is not running in this interpreter's prefix
    (a stray ``python3`` kernelspec pointing at another Python).
    """
    run = copy.deepcopy(nb)
    run.cells.append(nbformat.v4.new_code_cell(PREFIX_PROBE))
    client = NotebookClient(
        run,
        timeout=CELL_TIMEOUT,
        kernel_name=KERNEL_NAME,
        record_timing=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    probe = run.cells.pop()
    kernel_prefix = "".join(out.get("text", "") for out in probe.outputs).strip()
    if kernel_prefix != sys.prefix:
        raise RuntimeError(
            f"the {KERNEL_NAME!r} kernel ran in {kernel_prefix!r}, not in {sys.prefix!r}: "
            "remove the stray kernelspec (`jupyter kernelspec list`)"
        )
    return run


def staleness_problems(nb: nbformat.NotebookNode) -> list[str]:
    """Why the saved outputs of ``nb`` may not come from its sources (empty when fresh).

    Every code cell must have outputs and none an error, the execution counts
    must be 1..N in order (one top-to-bottom run), and the recorded source
    digest must match the sources.
    """
    problems = []
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    counts = [cell.execution_count for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts are {counts}, not 1..{len(code)} in order")
    for number, cell in enumerate(code, start=1):
        if not cell.outputs:
            problems.append(f"code cell {number} has no outputs")
        if any(out.output_type == "error" for out in cell.outputs):
            problems.append(f"code cell {number} saved an error")
    recorded = nb.metadata.get("verbcal", {}).get("source_sha256")
    if recorded != source_digest(nb):
        problems.append("the cell sources changed since the notebook was last executed")
    return problems


def refresh(path: Path) -> None:
    """Execute the notebook at ``path`` and overwrite it with the outputs."""
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="verbcal-notebook-") as workdir:
        executed = execute(nb, Path(workdir))
    executed.metadata.setdefault("verbcal", {})["source_sha256"] = source_digest(executed)
    nbformat.write(executed, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    parser.add_argument("--check", action="store_true", help="only report stale notebooks")
    args = parser.parse_args(argv)
    paths = args.notebooks or sorted(NOTEBOOK_DIR.glob("*.ipynb"))
    stale = 0
    for path in paths:
        if args.check:
            problems = staleness_problems(nbformat.read(path, as_version=4))
            stale += bool(problems)
            print(f"{path.name}: " + ("; ".join(problems) or "fresh"))
        else:
            print(f"executing {path.name} …", flush=True)
            refresh(path)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
