"""Every command over the inputs a hostile new user gives (issue 9, part B, and A.4).

Each case runs the installed ``verbcal`` console script in a subprocess and
checks its exit code, its message, that stderr holds no Python traceback and
that every input file is byte for byte what it was. Cases that need an
endpoint use the loopback fault server (``tests/fault_server.py``) on 127.0.0.1,
whose request record shows that nothing was sent when nothing may be.
"""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from fault_server import FaultServer

from verbcal import InvalidInputError, load_calibrator, read_items
from verbcal.calibrators import CALIBRATORS, TemperatureScaling
from verbcal.elicit.cache import ResponseCache
from verbcal.errors import VerbcalError
from verbcal.persist import save_calibrator
from verbcal.predictions import (
    CONTENT_FREE,
    Prediction,
    read_predictions,
    to_arrays,
    write_predictions,
)
from verbcal.schema import FITTED_RULES
from verbcal.workflow import METHODS, fit_calibrator

VERBCAL = Path(sys.executable).with_name("verbcal")
LABELS = ["neg", "pos"]


# ----------------------------------------------------------------------------- helpers


def verbcal(
    *argv: object, cwd: Path, inputs: Sequence[Path] = (), timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the console script; fail on a traceback or on any change to an input file."""
    before = {path: path.read_bytes() for path in inputs}
    proc = subprocess.run(
        [str(VERBCAL), *map(str, argv)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "OPENAI_API_KEY": "sk-test"},
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} was changed"
    return proc


def refused(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Exit 2 with one ``verbcal COMMAND: ...`` message holding every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def synthetic_predictions(n: int = 240, seed: int = 0, labelled: bool = True) -> list[Prediction]:
    """Over-confident stated probabilities on a 0.05 grid, with gold labels drawn from truth."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        stated = round(float(rng.choice(np.arange(0.5, 1.0001, 0.05))), 2)
        top = int(rng.integers(2))
        truth = 0.5 + (stated - 0.5) * 0.6
        gold = top if rng.random() < truth else 1 - top
        probs = {LABELS[top]: stated, LABELS[1 - top]: round(1 - stated, 2)}
        out.append(
            Prediction(
                id=f"r{i}",
                labels=list(LABELS),
                probs=probs,
                status="ok",
                label=LABELS[gold] if labelled else None,
            )
        )
    return out


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A folder with p.jsonl (labelled predictions), cal.json (temperature, holdout 0.5)."""
    write_predictions(tmp_path / "p.jsonl", synthetic_predictions())
    record = fit_calibrator(synthetic_predictions(), "temperature")
    save_calibrator(tmp_path / "cal.json", record)
    return tmp_path


def write_items(path: Path, n: int) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"i{i}", "text": f"review {i}", "label": "pos"}) + "\n")
    return path


def elicit_args(items: Path, out: Path, base_url: str, *extra: object) -> list[object]:
    return [
        "elicit",
        "--input",
        items,
        "--labels",
        "positive,negative",
        "--label-field",
        "none",
        "--model",
        "m",
        "--base-url",
        base_url,
        "--out",
        out,
        *extra,
    ]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- 1. outputs


@pytest.mark.parametrize(
    "case",
    ["same", "dot-slash", "symlink", "cache-is-out", "cache-is-input", "hard-link"],
)
def test_elicit_output_that_is_an_input_is_refused_before_any_request(tmp_path, case):
    items = write_items(tmp_path / "items.jsonl", 3)
    out, extra = Path("items.jsonl"), []
    if case == "dot-slash":
        out = Path("./sub/../items.jsonl")
        (tmp_path / "sub").mkdir()
    elif case == "symlink":
        (tmp_path / "link.jsonl").symlink_to(items)
        out = Path("link.jsonl")
    elif case == "hard-link":
        os.link(items, tmp_path / "hard.jsonl")
        out = Path("hard.jsonl")
    elif case == "cache-is-out":
        out, extra = Path("p.jsonl"), ["--cache", "p.jsonl"]
    elif case == "cache-is-input":
        out, extra = Path("p.jsonl"), ["--cache", "./items.jsonl"]
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(
            *elicit_args(Path("items.jsonl"), out, server.base_url, *extra),
            cwd=tmp_path,
            inputs=[items],
        )
        assert server.record.total == 0
    refused(proc, "is the same file as")
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["fit", "--preds", "p.jsonl", "--method", "temperature", "--out", "./p.jsonl"], "--preds"),
        (["report", "--preds", "p.jsonl", "--out", "p.jsonl"], "--preds"),
        (["report", "--preds", "p.jsonl", "--calibrator", "cal.json", "--out", "cal.json"], "cal"),
        (["apply", "--preds", "p.jsonl", "--calibrator", "cal.json", "--out", "cal.json"], "cal"),
        (
            ["apply", "--preds", "p.jsonl", "--calibrator", "cal.json", "--out", "p.jsonl"],
            "--preds",
        ),
    ],
)
def test_output_that_is_an_input_or_the_calibrator_is_refused(work, argv, needle):
    proc = verbcal(*argv, cwd=work, inputs=[work / "p.jsonl", work / "cal.json"])
    refused(proc, "is the same file as", needle)


def test_calibrated_predictions_are_refused_unless_allowed(work):
    inputs = [work / "p.jsonl", work / "cal.json"]
    proc = verbcal(
        "apply", "--preds", "p.jsonl", "--calibrator", "cal.json", "--out", "q.jsonl", cwd=work
    )
    assert proc.returncode == 0, proc.stderr
    inputs.append(work / "q.jsonl")
    again = ["--preds", "q.jsonl", "--calibrator", "cal.json"]
    for argv in (
        ["apply", *again, "--out", "q2.jsonl"],
        ["evaluate", *again],
        ["threshold", *again, "--positive", "pos", "--target-precision", "0.8"],
        ["report", *again, "--out", "r.html"],
    ):
        refused(verbcal(*argv, cwd=work, inputs=inputs), "already calibrated", "--allow-calibrated")
    proc = verbcal("apply", *again, "--out", "q2.jsonl", "--allow-calibrated", cwd=work)
    assert proc.returncode == 0, proc.stderr
    # evaluating calibrated predictions on their own is what apply's output is for
    assert verbcal("evaluate", "--preds", "q.jsonl", cwd=work).returncode == 0


# ----------------------------------------------------------------------------- 2. dead endpoint


def test_closed_port_stops_40_items_with_exit_3_well_under_20_s(tmp_path):
    items = write_items(tmp_path / "items.jsonl", 40)
    started = time.monotonic()
    proc = verbcal(
        *elicit_args(items, tmp_path / "p.jsonl", f"http://127.0.0.1:{closed_port()}/v1"),
        cwd=tmp_path,
        inputs=[items],
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert elapsed < 20
    messages = [line for line in proc.stderr.splitlines() if line.startswith("verbcal elicit:")]
    assert len(messages) == 1 and "is not answering" in messages[0]
    assert "rerun the same command" in messages[0]


@pytest.mark.parametrize(
    ("fault", "timeout", "needle"),
    [
        ("slow", "1", "timed out"),
        ("html", "10", "malformed"),
        ("no_choices", "10", "no choices"),
        ("503", "10", "HTTP 503"),
        ("drop", "10", "connection"),
    ],
)
def test_endpoint_that_never_answers_stops_with_exit_3(tmp_path, fault, timeout, needle):
    items = write_items(tmp_path / "items.jsonl", 3)
    with FaultServer(
        labels=["positive", "negative"], script=[fault] * 30, slow_seconds=5, retry_after=0.01
    ) as server:
        started = time.monotonic()
        proc = verbcal(
            *elicit_args(items, tmp_path / "p.jsonl", server.base_url, "--timeout", timeout),
            cwd=tmp_path,
            inputs=[items],
        )
        elapsed = time.monotonic() - started
    assert proc.returncode == 3, proc.stderr
    assert "is not answering" in proc.stderr and needle in proc.stderr
    assert elapsed < 20  # 3 items with a hang and --timeout 2 took 22 s before


def test_answers_received_before_the_endpoint_died_stay_cached(tmp_path):
    items = write_items(tmp_path / "items.jsonl", 12)
    first = write_items(tmp_path / "first.jsonl", 5)  # the same first 5 items
    cache = tmp_path / "run.cache.db"
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(
            *elicit_args(first, "a.jsonl", server.base_url, "--cache", cache), cwd=tmp_path
        )
        assert proc.returncode == 0, proc.stderr
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    proc = verbcal(*elicit_args(items, "b.jsonl", dead, "--cache", cache), cwd=tmp_path)
    assert proc.returncode == 3
    # The cache key holds the base URL: the rerun goes to the same (revived) address.
    port = int(dead.rsplit(":", 1)[1].split("/")[0])
    with FaultServer(labels=["positive", "negative"], port=port) as server:
        proc = verbcal(*elicit_args(items, "b.jsonl", dead, "--cache", cache), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert server.record.total == 12  # nothing was lost, nothing asked twice
    assert len(read_predictions(tmp_path / "b.jsonl")) == 12


def test_an_endpoint_that_dies_mid_run_stops_it_with_exit_3(tmp_path):
    items = write_items(tmp_path / "items.jsonl", 300)
    server = FaultServer(labels=["positive", "negative"], latency=0.01).start()

    def kill_after_20_answers() -> None:
        while sum(server.record.answered.values()) < 20:
            time.sleep(0.01)
        server.faults = {"503": 1.0}  # from now on the model behind it is gone

    killer = threading.Thread(target=kill_after_20_answers, daemon=True)
    killer.start()
    try:
        proc = verbcal(
            *elicit_args(items, "p.jsonl", server.base_url), cwd=tmp_path, inputs=[items]
        )
    finally:
        killer.join(timeout=5)
        server.stop()
    assert proc.returncode == 3, proc.stderr
    assert re.search(r"the last \d+ attempts all failed, after \d+ answered", proc.stderr)
    with ResponseCache(tmp_path / "p.cache.db") as cache:  # what was answered is kept
        assert len(cache) >= 20


def test_transient_trouble_in_a_healthy_run_is_retried(tmp_path):
    items = write_items(tmp_path / "items.jsonl", 40)
    faults = {"500": 0.15, "503": 0.1, "drop": 0.05}
    with FaultServer(labels=["positive", "negative"], faults=faults, seed=2, retry_after=0.01) as s:
        proc = verbcal(*elicit_args(items, "p.jsonl", s.base_url), cwd=tmp_path, inputs=[items])
        assert sum(s.record.outcomes[k] for k in faults) > 5
    assert proc.returncode == 0, proc.stderr
    assert all(p.status == "ok" for p in read_predictions(tmp_path / "p.jsonl"))


# ----------------------------------------------------------------------------- 3. wrong numbers


def test_threshold_evaluate_and_report_refuse_the_same_calibrators(work):
    other = fit_calibrator(synthetic_predictions(), "temperature")
    other.labels = ["bad", "good"]
    save_calibrator(work / "other.json", other)
    everything = fit_calibrator(synthetic_predictions(), "temperature", holdout=0)
    save_calibrator(work / "all.json", everything)
    inputs = [work / "p.jsonl", work / "other.json", work / "all.json"]
    for calibrator, needle in (
        ("other.json", "not the calibrator's labels"),
        ("all.json", "every row"),
    ):
        common = ["--preds", "p.jsonl", "--calibrator", calibrator]
        positive = "good" if calibrator == "other.json" else "pos"
        for argv in (
            ["evaluate", *common],
            ["report", *common, "--out", "r.html"],
            ["threshold", *common, "--positive", positive, "--target-precision", "0.8"],
        ):
            refused(verbcal(*argv, cwd=work, inputs=inputs), needle)


@pytest.mark.parametrize(
    ("second_id", "needle"),
    [('"r7"', "duplicate id 'r7' (also on line 8"), ("2", "duplicate id '2' (also on line 3")],
)
def test_duplicate_ids_are_refused_naming_both_lines(tmp_path, second_id, needle):
    rows = [p.to_json() for p in synthetic_predictions(20)]
    rows[2]["id"] = "2"
    rows[11]["id"] = json.loads(second_id)  # line 12 repeats line 8 ('r7') or line 3 ('2')
    path = tmp_path / "dup.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    refused(verbcal("evaluate", "--preds", path, cwd=tmp_path, inputs=[path]), "line 12", needle)


def test_item_ids_2_and_quoted_2_are_one_id(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": 2, "text": "a"}\n{"id": "2", "text": "b"}\n')
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(*elicit_args(path, "p.jsonl", server.base_url), cwd=tmp_path, inputs=[path])
        assert server.record.total == 0
    refused(proc, "line 2: duplicate id '2' (also on line 1)")


def _edit_temperature(document: dict, value: object) -> None:
    document["calibrator"]["fitted"]["temperature_"] = value


#: Hand edits of a calibrator file and what the refusal names.
HAND_EDITS = {
    "temperature NaN": (
        lambda d: _edit_temperature(d, float("nan")),
        "temperature_: must be a finite number",
    ),
    "temperature 0": (lambda d: _edit_temperature(d, 0), "temperature_: must be a number > 0"),
    "temperature < 0": (lambda d: _edit_temperature(d, -1.5), "temperature_: must be a number > 0"),
    "temperature null": (
        lambda d: _edit_temperature(d, None),
        "temperature_: must be a finite number, got None",
    ),
    "temperature text": (
        lambda d: _edit_temperature(d, "1.2"),
        "temperature_: must be a finite number",
    ),
    "temperature true": (
        lambda d: _edit_temperature(d, True),
        "temperature_: must be a finite number",
    ),
    "no temperature": (
        lambda d: d["calibrator"]["fitted"].pop("temperature_"),
        "temperature_: missing",
    ),
    "no classes_": (lambda d: d["calibrator"]["fitted"].pop("classes_"), "classes_: missing"),
    "fitted null": (
        lambda d: d["calibrator"].update(fitted=None),
        "calibrator.fitted: must be an object",
    ),
    "foreign class": (
        lambda d: d["calibrator"].update({"class": "os.system"}),
        "unknown calibrator class",
    ),
    "unknown parameter": (lambda d: d["calibrator"]["params"].update(evil=1), "params.evil"),
    "labels null": (lambda d: d.update(labels=None), "labels: must list at least two"),
    "labels repeated": (
        lambda d: d.update(labels=["neg", "neg"]),
        "labels: must list at least two distinct",
    ),
    "labels too many": (lambda d: d.update(labels=["a", "b", "c"]), "n_features_in_"),
    "n_probes text": (lambda d: d.update(n_probes="3"), "n_probes: must be an integer >= 0"),
    "fitted_ids object": (lambda d: d.update(fitted_ids={"r1": 1}), "fitted_ids: must be a list"),
    "method null": (lambda d: d.update(method=None), "method: must be a method name"),
    "bad dtype": (
        lambda d: d["calibrator"]["fitted"].update(classes_={"__ndarray__": [0, 1], "dtype": "x"}),
        "classes_: not a readable array",
    ),
}


def _hand_edited(work: Path, case: str) -> Path:
    document = json.loads((work / "cal.json").read_text())
    edit, _ = HAND_EDITS[case]
    edit(document)
    bad = work / "bad.json"
    bad.write_text(json.dumps(document))
    return bad


@pytest.mark.parametrize(
    "case",
    ["temperature NaN", "temperature 0", "temperature < 0", "temperature null",
     "temperature text", "no temperature", "labels null", "foreign class"],
)  # fmt: skip
def test_hand_edited_calibrator_is_refused_naming_the_field(work, case):
    bad = _hand_edited(work, case)
    proc = verbcal(
        "apply", "--preds", "p.jsonl", "--calibrator", bad, "--out", "q.jsonl",
        cwd=work, inputs=[work / "p.jsonl", bad],
    )  # fmt: skip
    refused(proc, str(bad), HAND_EDITS[case][1])
    assert not (work / "q.jsonl").exists()


def test_load_calibrator_names_the_field_of_every_hand_edit(work):
    for case, (_, needle) in HAND_EDITS.items():
        bad = _hand_edited(work, case)
        with pytest.raises(InvalidInputError, match="bad.json") as error:
            load_calibrator(bad)
        assert needle in str(error.value), case


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"probs": {"neg": True, "pos": False}}, "'probs' values must be numbers"),
        ({"probs": {"neg": float("nan"), "pos": 0.5}}, "'probs' values must be numbers"),
        ({"labels": ["neg", "neg"], "probs": {"neg": 1.0}}, "two distinct names"),
        ({"id": ["r", 1]}, "'id' must be a string or an integer"),
        ({"id": True}, "'id' must be a string or an integer"),
        ({"calibrated_by": 3}, "'calibrated_by' must be a method name"),
    ],
)
def test_malformed_prediction_rows_are_refused(tmp_path, row, needle):
    """true/false are not probabilities, labels are distinct, ids are strings or integers."""
    path = tmp_path / "p.jsonl"
    base = {"id": "1", "labels": LABELS, "probs": {"neg": 0.3, "pos": 0.7}, "status": "ok"}
    path.write_text(json.dumps({**base, **row}) + "\n")
    refused(verbcal("evaluate", "--preds", path, cwd=tmp_path, inputs=[path]), "line 1", needle)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--rpm", "0"], "--rpm: expected a finite number > 0"),
        (["--tpm", "-1"], "--tpm: expected a finite number > 0"),
        (["--max-tokens", "0"], "--max-tokens: expected an integer >= 1"),
        (["--temperature", "-5"], "--temperature: expected a number in [0, 2]"),
        (["--temperature", "nan"], "--temperature: expected a number in [0, 2]"),
        (["--concurrency", "0"], "--concurrency: expected an integer >= 1"),
        (["--samples", "0"], "--samples: expected an integer >= 1"),
        (["--timeout", "0"], "--timeout: expected a finite number > 0"),
        (["--probes", "--n-random-probes", "-1"], "--n-random-probes: expected an integer >= 0"),
        (["--samples", "3"], "temperature > 0"),  # checked by the Elicitor, still before paying
        (["--template", "no-such-template"], "no-such-template"),
    ],
)
def test_elicit_options_are_checked_before_any_request(tmp_path, option, needle):
    items = write_items(tmp_path / "items.jsonl", 3)
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(*elicit_args(items, "p.jsonl", server.base_url, *option), cwd=tmp_path)
        assert server.record.total == 0
    refused(proc, needle)
    assert not (tmp_path / "p.cache.db").exists() and not (tmp_path / "p.jsonl").exists()


def test_too_few_bootstrap_resamples_are_refused(work):
    refused(verbcal("evaluate", "--preds", "p.jsonl", "--n-boot", "1", cwd=work), ">= 100")
    proc = verbcal("evaluate", "--preds", "p.jsonl", "--n-boot", "100", "--json", cwd=work)
    assert proc.returncode == 0
    for _value, low, high in json.loads(proc.stdout)["before"].values():
        assert low <= high


# ----------------------------------------------------------------------------- 4. encodings


def test_csv_with_a_utf8_bom_keeps_its_id_column(tmp_path):
    items = tmp_path / "items.csv"
    items.write_bytes("\ufeffid,text\nA7,great film\nB9,dull\n".encode())
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(
            *elicit_args(items, "p.jsonl", server.base_url), cwd=tmp_path, inputs=[items]
        )
    assert proc.returncode == 0, proc.stderr
    assert [p.id for p in read_predictions(tmp_path / "p.jsonl")] == ["A7", "B9"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "p.jsonl").stat().st_mode) == 0o666 & ~umask  # was 0600


def test_latin1_csv_names_file_line_and_byte_and_reads_with_encoding(tmp_path):
    items = tmp_path / "items.csv"
    items.write_bytes("id,text\n1,fine\n2,caf\u00e9 au lait\n".encode("latin-1"))
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(
            *elicit_args(items, "p.jsonl", server.base_url), cwd=tmp_path, inputs=[items]
        )
        assert server.record.total == 0
        refused(proc, "items.csv, line 3", "byte 0xe9", "--encoding")
        proc = verbcal(
            *elicit_args(items, "p.jsonl", server.base_url, "--encoding", "latin-1"), cwd=tmp_path
        )
    assert proc.returncode == 0, proc.stderr
    assert len(read_predictions(tmp_path / "p.jsonl")) == 2


def test_csv_error_in_a_quoted_multiline_record_names_the_physical_line(tmp_path):
    items = tmp_path / "items.csv"
    items.write_text('id,text\n1,"one\ntwo"\n2,"three\nfour"x\n3,five\n')
    proc = verbcal(*elicit_args(items, "p.jsonl", "http://127.0.0.1:9/v1"), cwd=tmp_path)
    refused(proc, "items.csv, line 5", "the record that starts on line 4")
    items.write_text('id,text\n1,"one\ntwo"\n2,"three\nfour\n3,five\n')  # never closed
    proc = verbcal(*elicit_args(items, "p.jsonl", "http://127.0.0.1:9/v1"), cwd=tmp_path)
    refused(proc, "items.csv, line 4", "a quoted field of this record is never closed")


# ----------------------------------------------------------------------------- 5. no tracebacks


@pytest.mark.parametrize(
    ("out", "needle"),
    [
        ("folder", "is a folder"),
        ("missing/p.jsonl", "does not exist"),
        ("/proc/p.jsonl", "cannot write"),
    ],
)
def test_unwritable_output_is_refused_before_any_request(tmp_path, out, needle):
    (tmp_path / "folder").mkdir()
    items = write_items(tmp_path / "items.jsonl", 3)
    with FaultServer(labels=["positive", "negative"]) as server:
        proc = verbcal(*elicit_args(items, out, server.base_url), cwd=tmp_path, inputs=[items])
        assert server.record.total == 0
    refused(proc, needle)


@pytest.mark.parametrize("command", ["fit", "apply", "report"])
def test_other_commands_refuse_a_folder_or_missing_folder(work, command):
    (work / "folder").mkdir()
    argv = {
        "fit": ["fit", "--preds", "p.jsonl", "--method", "temperature"],
        "apply": ["apply", "--preds", "p.jsonl", "--calibrator", "cal.json"],
        "report": ["report", "--preds", "p.jsonl"],
    }[command]
    inputs = [work / "p.jsonl", work / "cal.json"]
    refused(verbcal(*argv, "--out", "folder", cwd=work, inputs=inputs), "is a folder")
    refused(verbcal(*argv, "--out", "no/x", cwd=work, inputs=inputs), "does not exist")


def test_holdout_that_leaves_too_few_rows_is_refused(tmp_path):
    path = tmp_path / "p.jsonl"
    write_predictions(path, synthetic_predictions(40))
    base = ["fit", "--preds", path, "--method", "temperature", "--out", "c.json"]
    refused(verbcal(*base, "--holdout", "0.99", cwd=tmp_path, inputs=[path]), "leaves 0 to fit on")
    refused(
        verbcal(*base, "--holdout", "1", cwd=tmp_path), "--holdout: expected a number in [0, 1)"
    )
    assert verbcal(*base, "--holdout", "0.9", cwd=tmp_path).returncode == 0


def test_demo_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "demo").write_text("not a folder")
    proc = verbcal(
        "demo", "--replay", "--out-dir", "demo", cwd=tmp_path, inputs=[tmp_path / "demo"]
    )
    refused(proc, "is a file")


def test_a_closed_pipe_is_not_a_traceback(work):
    proc = subprocess.Popen(
        [str(VERBCAL), "evaluate", "--preds", "p.jsonl", "--json"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    proc.stdout.close()  # the reader is gone before anything is written (`| head` after 0 lines)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert "Traceback" not in err and "BrokenPipe" not in err


def test_python_api_raises_verbcal_errors(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text('{"format": "verbcal-calibrator", "format_version": 1, "labels": ["a", "b"]}')
    with pytest.raises(InvalidInputError, match="calibrator: must be an object"):
        load_calibrator(bad)
    items = tmp_path / "items.jsonl"
    items.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(InvalidInputError, match=r"items.jsonl, line 2: byte 0xff"):
        read_items(items)
    with pytest.raises(VerbcalError, match="call fit first"):
        TemperatureScaling().predict_proba([[0.2, 0.8]])


def test_every_calibrator_class_has_fitted_rules_and_every_method_round_trips(tmp_path):
    assert set(CALIBRATORS) <= set(FITTED_RULES)
    predictions = synthetic_predictions(200)
    rng = np.random.default_rng(1)
    for i in range(8):
        p = float(rng.uniform(0.3, 0.7))
        probe = {"neg": p, "pos": 1 - p}
        predictions.append(Prediction(f"cf{i}", list(LABELS), probe, "ok", kind=CONTENT_FREE))
    P = np.array([[0.9, 0.1], [0.35, 0.65], [0.5, 0.5]])
    for method in METHODS:
        record = fit_calibrator(predictions, method)
        save_calibrator(tmp_path / f"{method}.json", record)
        loaded = load_calibrator(tmp_path / f"{method}.json")
        expected = record.calibrator.predict_proba(P)
        np.testing.assert_allclose(loaded.calibrator.predict_proba(P), expected, atol=1e-12)


# ----------------------------------------------------------------------------- 6. smaller


def test_a_failed_threshold_says_why(work):
    proc = verbcal(
        "threshold", "--preds", "p.jsonl", "--calibrator", "cal.json", "--positive", "pos",
        "--target-precision", "1", cwd=work, inputs=[work / "p.jsonl", work / "cal.json"],
    )  # fmt: skip
    assert proc.returncode == 1
    assert "verbcal threshold: target not met" in proc.stderr and "precision 1" in proc.stderr


def test_evaluate_wording_and_help(work):
    proc = verbcal("evaluate", "--preds", "p.jsonl", "--n-boot", "100", cwd=work)
    assert proc.returncode == 0
    assert proc.stdout.startswith("240 labelled rows") and "held-out" not in proc.stdout
    proc = verbcal("evaluate", "--preds", "p.jsonl", "--calibrator", "cal.json", cwd=work)
    assert "held-out labelled rows" in proc.stdout
    help_text = verbcal("evaluate", "--help", cwd=work).stdout
    assert "95% intervals" in " ".join(help_text.split()) and "%%" not in help_text


def test_outputs_get_the_umask_permissions(work):
    umask = os.umask(0o022)
    try:
        for argv in (
            ["apply", "--preds", "p.jsonl", "--calibrator", "cal.json", "--out", "q.jsonl"],
            ["fit", "--preds", "p.jsonl", "--method", "temperature", "--out", "c2.json"],
        ):
            assert verbcal(*argv, cwd=work).returncode == 0
    finally:
        os.umask(umask)
    for name in ("q.jsonl", "c2.json"):
        assert stat.S_IMODE((work / name).stat().st_mode) == 0o644


def test_invalid_label_set_leaves_no_cache_file(tmp_path):
    items = write_items(tmp_path / "items.jsonl", 2)
    proc = verbcal(
        "elicit", "--input", items, "--labels", "pos,Pos", "--model", "m",
        "--base-url", "http://127.0.0.1:9/v1", "--out", "p.jsonl", cwd=tmp_path,
    )  # fmt: skip
    refused(proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["items.jsonl"]


# ----------------------------------------------------------------------------- A.4 mixed rows


def test_fit_on_a_mixed_file_uses_the_labelled_rows_and_the_rest_stay_usable(tmp_path):
    predictions = synthetic_predictions(240)
    for p in predictions[::3]:  # 80 rows without a gold label
        p.label = None
    path = tmp_path / "mixed.jsonl"
    write_predictions(path, predictions)
    proc = verbcal(
        "fit", "--preds", path, "--method", "temperature", "--out", "cal.json",
        cwd=tmp_path, inputs=[path],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "fitted temperature on 80 labelled rows" in proc.stdout
    assert "left out 80 rows without a gold label" in proc.stdout
    arrays = to_arrays(read_predictions(path))  # the Python API says the same
    assert arrays.n_unlabelled == 80 and len(arrays.ids) == 160
    record = load_calibrator(tmp_path / "cal.json")
    unlabelled = {p.id for p in predictions if p.label is None}
    assert not unlabelled & set(record.fitted_ids)

    proc = verbcal("evaluate", "--preds", path, "--calibrator", "cal.json", "--json", cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["rows"] == 80 and result["unlabelled_left_out"] == 80

    proc = verbcal(
        "threshold", "--preds", path, "--calibrator", "cal.json", "--positive", "pos",
        "--target-precision", "0.6", "--json", cwd=tmp_path, inputs=[path],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    chosen = json.loads(proc.stdout)
    assert chosen["evaluated_on_rows"] == 160  # 80 held-out labelled + 80 unlabelled
    assert chosen["chosen_on"] == "80 labelled calibration rows"

    proc = verbcal(
        "apply", "--preds", path, "--calibrator", "cal.json", "--out", "q.jsonl", cwd=tmp_path
    )
    assert proc.returncode == 0
    calibrated = read_predictions(tmp_path / "q.jsonl")
    assert all(p.calibrated_by == "temperature" for p in calibrated)
