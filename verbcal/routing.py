"""Route predictions: answer automatically, or hand to a person (``verbcal route``).

Two rules decide each item, on its calibrated probabilities:

* a **target accuracy** (:func:`route_predictions` with ``target_accuracy``):
  answer with the top label when its probability reaches a confidence
  threshold. The threshold is chosen on the labelled rows the calibrator was
  fitted on, or on the labelled items of other predictions (``labelled``, to
  route new unlabelled items), optionally with a finite-sample guarantee
  (:func:`verbcal.selective.selective_threshold`); without labelled rows,
  from the calibrated probabilities alone
  (:func:`verbcal.selective.predicted_selective_threshold`);
* a **cost matrix** (``costs``): the decision of least expected cost, where
  ``abstain`` means a person takes the item (:mod:`verbcal.decisions`).

Items whose answer could not be parsed always go to a person, and so does
every item when no threshold reaches the target accuracy (or cannot be
guaranteed to). Each routed row is a JSON object::

    {"id": "17", "decision": "auto", "label": "pos", "confidence": 0.97}
    {"id": "18", "decision": "human", "label": null, "confidence": 0.61,
     "reason": "confidence below 0.9"}

(with costs, ``"expected_cost"`` too). The summary says what coverage and
accuracy (or cost) to expect, and, on labelled rows the calibrator was not
fitted on, what was realised.

Label sets (``verbcal conformal``, :func:`conformal_predictions`): instead of
one decision, each item gets the set of labels that holds the true one with
probability ``>= 1 - alpha`` (:mod:`verbcal.conformal`), calibrated on the
labelled items the calibrator was *not* fitted on (they are exchangeable with
new items; the fitted ones are not quite)::

    {"id": "17", "set": ["B"], "size": 1}
    {"id": "18", "set": ["A", "C"], "size": 2}

An unparsed item gets every label.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verbcal.conformal import ConformalSets, SetSummary, summarize_sets
from verbcal.decisions import ABSTAIN, CostEvaluation, CostMatrix, evaluate_costs, expected_costs
from verbcal.errors import ConfigurationError, InvalidInputError
from verbcal.metrics.intervals import clopper_pearson
from verbcal.persist import CalibratorRecord
from verbcal.predictions import ITEM, Prediction, PredictionArrays, to_arrays
from verbcal.selective import (
    SelectiveThreshold,
    predicted_selective_threshold,
    route,
    selective_threshold,
)
from verbcal.workflow import check_same_labels

__all__ = [
    "AUTO",
    "HUMAN",
    "LabelSets",
    "Routing",
    "conformal_predictions",
    "route_predictions",
    "write_routed",
]

AUTO, HUMAN = "auto", "human"


@dataclass(frozen=True)
class Routing:
    """Every item's decision and what to expect from them.

    Attributes
    ----------
    rows : list of dict
        One JSON-ready object per item prediction, in input order.
    rule : str
        How items were decided, in words.
    selection : SelectiveThreshold or None
        With a target accuracy: the threshold and how it was chosen.
    expected : dict
        ``coverage`` (share of all items answered automatically),
        ``n_auto``, ``n_items``, and ``accuracy`` (mean calibrated
        confidence of the automatic answers) or ``mean_cost`` (mean least
        expected cost over the parsed items).
    realised : dict or None
        On labelled items the calibrator was not fitted on: ``n_rows``,
        ``coverage``, ``accuracy`` of the automatic answers with its
        Clopper–Pearson interval; with costs, the :class:`CostEvaluation`
        as a dict under ``costs``.
    """

    rows: list[dict]
    rule: str
    selection: SelectiveThreshold | None
    expected: dict
    realised: dict | None

    def summary_lines(self) -> list[str]:
        """The lines ``verbcal route`` prints."""
        e = self.expected
        lines = [self.rule]
        if self.selection is not None:
            lines.append(self.selection.explanation)
        lines.append(
            f"expected coverage {e['coverage']:.1%}: {e['n_auto']} of {e['n_items']} items "
            "answered automatically, the rest to a person"
        )
        if "accuracy" in e:
            lines.append(
                f"expected accuracy of the automatic answers {e['accuracy']:.4f} "
                "(their mean calibrated confidence)"
            )
        if "mean_cost" in e:
            lines.append(f"expected mean cost per item {e['mean_cost']:.4f} (calibrated)")
        r = self.realised
        if r:
            text = (
                f"realised on {r['n_rows']} labelled held-out items: coverage {r['coverage']:.1%}"
            )
            if r.get("accuracy") is not None:
                low, high = r["accuracy_ci"]
                text += f", accuracy {r['accuracy']:.4f} (95% CI {low:.4f}-{high:.4f})"
            if "costs" in r:
                c = r["costs"]
                text += (
                    f", mean cost {c['realised_mean_cost']:.4f} (predicted "
                    f"{c['predicted_mean_cost']:.4f}); best fixed threshold in hindsight "
                    f"{c['best_threshold_mean_cost']:.4f}, regret {c['regret']:+.4f}"
                )
            lines.append(text)
        return lines


def _label_indices(
    predictions: list[Prediction], ids: Sequence[str], labels: Sequence[str]
) -> np.ndarray:
    gold = {p.id: p.label for p in predictions if p.kind == ITEM and p.label is not None}
    return np.array(
        [labels.index(gold[i]) if gold.get(i) in labels else -1 for i in ids], dtype=np.int64
    )


def _calibrated_items(
    predictions: list[Prediction], record: CalibratorRecord
) -> tuple[PredictionArrays, np.ndarray, np.ndarray, np.ndarray]:
    """The parsed items, their calibrated rows, gold indices (-1: none) and fitted-on mask."""
    check_same_labels(predictions, record.labels)
    items = to_arrays(predictions, kind=ITEM, prefer_labelled=False)
    Q = record.calibrator.predict_proba(items.P)
    gold = _label_indices(predictions, items.ids, record.labels)
    fitted = set(record.fitted_ids)
    fit_rows = np.array([i in fitted for i in items.ids], dtype=bool)
    return items, Q, gold, fit_rows


def _labelled_rows(
    labelled: list[Prediction], record: CalibratorRecord, what: str, *, unfitted: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities and gold indices of the parsed, labelled items of ``labelled``.

    With ``unfitted``, only the items the calibrator was not fitted on.
    """
    check_same_labels(labelled, record.labels)
    rows = to_arrays(labelled, kind=ITEM)
    if rows.y is None:
        raise InvalidInputError(f"{what} have no gold labels")
    keep = np.ones(len(rows.ids), dtype=bool)
    if unfitted:
        fitted = set(record.fitted_ids)
        keep = np.array([i not in fitted for i in rows.ids], dtype=bool)
        if not keep.any():
            raise InvalidInputError(f"the calibrator was fitted on every item of {what}")
    return record.calibrator.predict_proba(rows.P[keep]), rows.y[keep]


def _reason(costs: CostMatrix | None, selection: SelectiveThreshold | None) -> str:
    if costs is not None:
        return f"{ABSTAIN} has the least expected cost"
    assert selection is not None
    if not selection.met:
        return "no confidence threshold reaches the target accuracy" + (
            " with the guarantee asked for" if selection.guarantee is not None else ""
        )
    return f"confidence below {selection.threshold:g}"


def route_predictions(
    predictions: list[Prediction],
    record: CalibratorRecord,
    *,
    target_accuracy: float | None = None,
    guarantee: float | None = None,
    costs: CostMatrix | None = None,
    labelled: list[Prediction] | None = None,
) -> Routing:
    """Decide every item prediction: ``auto`` with a label, or ``human``.

    Parameters
    ----------
    predictions : list of Prediction
        Items (parsed or not); content-free probes are ignored.
    record : CalibratorRecord
        The calibrator that makes the probabilities trustworthy.
    target_accuracy : float in (0, 1], optional
        Accuracy wanted on the automatic answers. Give this or ``costs``.
    guarantee : float in (0.5, 1), optional
        With ``target_accuracy``: promise it on new items with this probability
        over the labelled rows the calibrator was fitted on.
    costs : CostMatrix, optional
        Decide by least expected cost; ``abstain`` goes to a person.
    labelled : list of Prediction, optional
        Choose the threshold on every labelled item of these predictions
        instead (for routing new, unlabelled items with a threshold chosen on
        labelled ones).

    Returns
    -------
    Routing
    """
    if (target_accuracy is None) == (costs is None):
        raise ConfigurationError("give exactly one of a target accuracy and a cost matrix")
    if guarantee is not None and target_accuracy is None:
        raise ConfigurationError("a guarantee goes with a target accuracy, not with costs")
    labels = record.labels
    items, Q, gold, fit_rows = _calibrated_items(predictions, record)
    selection = None
    if target_accuracy is not None:
        choose_on = fit_rows & (gold >= 0)
        if labelled is not None:
            Q_l, gold_l = _labelled_rows(labelled, record, "the labelled predictions")
            selection = selective_threshold(Q_l, gold_l, target_accuracy, guarantee=guarantee)
            rule = f"threshold chosen on {len(gold_l)} labelled items of the labelled predictions"
        elif choose_on.any():
            selection = selective_threshold(
                Q[choose_on], gold[choose_on], target_accuracy, guarantee=guarantee
            )
            rule = (
                f"threshold chosen on {int(choose_on.sum())} labelled rows the calibrator "
                "was fitted on"
            )
        elif guarantee is not None:
            raise ConfigurationError(
                "a guarantee needs labelled rows the calibrator was fitted on; this "
                "calibrator file lists none (fit a labelled method, or drop --guarantee)"
            )
        else:
            selection = predicted_selective_threshold(Q, target_accuracy)
            rule = f"threshold chosen from the calibrated probabilities of {len(Q)} items"
        answer, top, _ = route(Q, selection.threshold)
        if not selection.met:  # a target that cannot be reached (or guaranteed): nothing auto
            answer[:] = False
        decided_label = np.where(answer, top, -1)
        confidence = Q.max(axis=1)
        per_row_cost = None
    else:
        assert costs is not None
        expected = expected_costs(Q, costs)
        decision = expected.argmin(axis=1)
        names = [costs.decisions[d] for d in decision]
        answer = np.array([name != ABSTAIN for name in names], dtype=bool)
        decided_label = np.array(
            [labels.index(name) if name != ABSTAIN else -1 for name in names], dtype=np.int64
        )
        confidence = Q.max(axis=1)
        per_row_cost = expected.min(axis=1)
        rule = f"least expected cost over the decisions {costs.decisions}"

    by_id = {}
    for i, item_id in enumerate(items.ids):
        row: dict = {"id": item_id}
        if answer[i]:
            row.update(decision=AUTO, label=labels[int(decided_label[i])])
        else:
            row.update(decision=HUMAN, label=None)
        row["confidence"] = float(confidence[i])
        if per_row_cost is not None:
            row["expected_cost"] = float(per_row_cost[i])
        if not answer[i]:
            row["reason"] = _reason(costs, selection)
        by_id[item_id] = row
    rows = []
    for p in predictions:
        if p.kind != ITEM:
            continue
        rows.append(
            by_id.get(p.id)
            or {
                "id": p.id,
                "decision": HUMAN,
                "label": None,
                "confidence": None,
                "reason": "the answer could not be parsed",
            }
        )
    n_items = len(rows)
    n_auto = sum(r["decision"] == AUTO for r in rows)
    expected_summary: dict = {"coverage": n_auto / n_items, "n_auto": n_auto, "n_items": n_items}
    if target_accuracy is not None:
        expected_summary["accuracy"] = (
            float(confidence[answer].mean()) if answer.any() else float("nan")
        )
    else:
        expected_summary["mean_cost"] = float(per_row_cost.mean())  # type: ignore[union-attr]

    realised: dict[str, Any] | None = None
    check = ~fit_rows & (gold >= 0)
    if check.any():
        auto = answer[check]
        right = int((decided_label[check] == gold[check])[auto].sum())
        realised = {
            "n_rows": int(check.sum()),
            "coverage": float(auto.mean()),
            "accuracy": right / int(auto.sum()) if auto.any() else None,
            "accuracy_ci": clopper_pearson(right, int(auto.sum())) if auto.any() else None,
        }
        if costs is not None:
            evaluation: CostEvaluation = evaluate_costs(Q[check], costs, gold[check])
            realised["costs"] = evaluation.to_json()
    return Routing(rows, rule, selection, expected_summary, realised)


def write_routed(path: str | os.PathLike, routing: Routing | LabelSets) -> Path:
    """Write one JSON object per item (see the module notes) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for row in routing.rows:
            out.write(json.dumps(row) + "\n")
    return path


@dataclass(frozen=True)
class LabelSets:
    """Every item's conformal label set, and how they were made.

    Attributes
    ----------
    rows : list of dict
        ``{"id", "set", "size"}`` per item prediction, in input order.
    sets : ConformalSets
        The fitted set maker (``quantile_``, ``n_calibration_``).
    summary : SetSummary
        Sizes over the parsed items (no coverage: their labels calibrated it).
    n_unparsed : int
        Items that got every label because their answer could not be parsed.
    """

    rows: list[dict]
    sets: ConformalSets
    summary: SetSummary
    n_unparsed: int

    def summary_lines(self) -> list[str]:
        s, cs = self.summary, self.sets
        scope = "for every class" if cs.class_conditional else "marginally"
        return [
            f"{cs.score.upper()} sets with coverage >= {1 - cs.alpha:g} {scope}, calibrated on "
            f"{cs.n_calibration_} labelled items",
            f"{s.n_rows} parsed items: mean set size {s.mean_size:.3f}, singletons "
            f"{s.singleton_rate:.1%}, empty {s.empty_rate:.1%}"
            + (f"; {self.n_unparsed} unparsed items get every label" if self.n_unparsed else ""),
        ]


def conformal_predictions(
    predictions: list[Prediction],
    record: CalibratorRecord,
    *,
    alpha: float = 0.1,
    score: str = "lac",
    class_conditional: bool = False,
    seed: int | None = 0,
    labelled: list[Prediction] | None = None,
) -> LabelSets:
    """Conformal label sets for every item, calibrated on held-out labelled items.

    Parameters
    ----------
    predictions : list of Prediction
    record : CalibratorRecord
    alpha : float in (0, 1), default 0.1
        Miscoverage allowed.
    score : {"lac", "aps", "raps"}, default "lac"
    class_conditional : bool, default False
    seed : int or None, default 0
        Seed of the APS/RAPS randomisation.
    labelled : list of Prediction, optional
        Calibrate the sets on the labelled items of these predictions instead
        (those the calibrator was not fitted on: the guarantee needs items
        exchangeable with new ones).

    Returns
    -------
    LabelSets
    """
    labels = record.labels
    items, Q, gold, fit_rows = _calibrated_items(predictions, record)
    if labelled is not None:
        Q_cal, gold_cal = _labelled_rows(
            labelled, record, "the labelled predictions", unfitted=True
        )
    else:
        calibrate = ~fit_rows & (gold >= 0)
        if not calibrate.any():
            raise InvalidInputError(
                "conformal sets need labelled items the calibrator was not fitted on: fit "
                "with --holdout > 0 on labelled predictions, or give --labelled"
            )
        Q_cal, gold_cal = Q[calibrate], gold[calibrate]
    sets = ConformalSets(
        alpha,
        score,  # type: ignore[arg-type]
        class_conditional=class_conditional,
        random_state=seed,
    ).fit(Q_cal, gold_cal)
    mask = sets.predict_sets(Q)
    by_id = {
        item_id: [labels[k] for k in np.flatnonzero(row)]
        for item_id, row in zip(items.ids, mask, strict=True)
    }
    rows = []
    unparsed = 0
    for p in predictions:
        if p.kind != ITEM:
            continue
        chosen = by_id.get(p.id)
        if chosen is None:
            unparsed += 1
            chosen = list(labels)
        rows.append({"id": p.id, "set": chosen, "size": len(chosen)})
    return LabelSets(rows, sets, summarize_sets(mask), unparsed)
