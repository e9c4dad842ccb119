"""Hypothesis strategies for probability rows shaped like what language models state.

A model's verbalized distribution is coarse: values on a 0.05, 0.1 or 0.25 grid,
many exact zeros, one-hot answers, a handful of distinct rows, sums of 0.99 or
1.01, and float noise once renormalised (0.6 next to 0.6000000000000001). Some
classes never come up as the answer, some never as the gold label.

Hypothesis draws the *shape* of a data set (classes, rows, grid, kind of rows,
noise, missing classes, a seed); numpy draws the numbers from that seed. The
repr of a drawn :class:`Verbalized` names every choice, so a failure can be
replayed by hand, and shrinking still simplifies the shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import strategies as st

#: Grids models state probabilities on.
GRID_STEPS = (0.05, 0.1, 0.25)

#: How the rows of a data set look.
KINDS = ("grid", "one_hot", "few_distinct", "near_duplicates", "mixed")


@dataclass(frozen=True)
class Verbalized:
    """One drawn data set: probability rows ``P``, gold labels ``y`` and how they were made."""

    P: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    renormalize: bool
    recipe: dict

    @property
    def n_classes(self) -> int:
        return int(self.P.shape[1])

    @property
    def n_label_classes(self) -> int:
        """Distinct classes among the gold labels."""
        return int(np.unique(self.y).size)

    def __repr__(self) -> str:
        shape = f"{self.P.shape[0]} rows x {self.P.shape[1]} classes"
        return f"Verbalized({shape}, renormalize={self.renormalize}, {self.recipe})"


#: Sizes of data sets and how often each comes up (hypothesis draws integers biased low,
#: so tiers are list entries: about 1 data set in 20 is large).
SIZE_TIERS = ("tens",) * 14 + ("thousands",) * 5 + ("large",)


@st.composite
def n_rows(draw, min_rows: int = 1, max_rows: int = 100_000) -> int:
    """Mostly up to 80 rows, often up to 3000, about 1 in 20 up to ``max_rows`` (10^5)."""
    tier = draw(st.sampled_from(SIZE_TIERS))
    low, high = {"tens": (1, 80), "thousands": (81, 3000), "large": (3001, 100_000)}[tier]
    high = max(min_rows, min(high, max_rows))
    return draw(st.integers(min(max(min_rows, low), high), high))


def _stated(rng: np.random.Generator, logits: np.ndarray, sharpness: float, step: float):
    """True probabilities and the values a model states for them: sharpened, on a grid.

    Rows whose every value rounds to 0 state the grid step for their top class.
    """
    truth = np.exp(logits - logits.max(axis=1, keepdims=True))
    truth /= truth.sum(axis=1, keepdims=True)
    sharp = np.exp(sharpness * (logits - logits.max(axis=1, keepdims=True)))
    sharp /= sharp.sum(axis=1, keepdims=True)
    stated = np.round(sharp / step) * step
    empty = stated.sum(axis=1) == 0
    stated[empty, sharp[empty].argmax(axis=1)] = step
    return truth, stated


def _draw_labels(rng: np.random.Generator, truth: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """One label per row from ``truth`` restricted to the ``allowed`` classes."""
    weights = truth * allowed
    weights /= weights.sum(axis=1, keepdims=True)
    u = rng.random(len(weights))[:, None]
    return np.minimum((u > np.cumsum(weights, axis=1)).sum(axis=1), len(allowed) - 1)


@st.composite
def verbalized(
    draw,
    min_classes: int = 2,
    max_classes: int = 20,
    min_rows: int = 1,
    max_rows: int = 100_000,
    max_cells: int = 2_000_000,
    allow_renormalize: bool = True,
) -> Verbalized:
    """A data set of stated probability rows and gold labels, valid for ``fit``.

    Rows sum to 1 within float noise, or (``renormalize=True``, when allowed)
    are left as stated: summing to 0.95, 0.99, 1.01 or 1.05. Labels may miss
    classes (even all but one: a supervised calibrator must then refuse ``y``
    clearly); columns may never be the top answer. ``max_cells`` bounds
    ``rows * classes`` (large rows come with few classes).
    """
    k = draw(st.integers(min_classes, max_classes))
    n = draw(n_rows(min_rows, max_rows))
    n = max(min_rows, min(n, max_cells // k))
    kind = draw(st.sampled_from(KINDS))
    step = draw(st.sampled_from(GRID_STEPS))
    sharpness = draw(st.sampled_from([0.5, 1.0, 3.0]))
    renormalize = allow_renormalize and draw(st.booleans())
    off_sum = draw(st.sampled_from([1.0, 0.99, 1.01])) if renormalize else 1.0
    never_top = draw(st.integers(0, k - 1))
    # Usually every class occurs as a label, sometimes a few do not, now and then only one
    # does (which a supervised calibrator must refuse clearly).
    absent = draw(st.sampled_from(("none",) * 6 + ("some",) * 3 + ("all_but_one",)))
    absent_from_y = 0
    if absent == "some":
        absent_from_y = draw(st.integers(min(1, k - 2), k - 2))
    elif absent == "all_but_one":
        absent_from_y = k - 1
    floor = 0.0 if renormalize else draw(st.sampled_from([0.0, 1e-9]))
    distinct = draw(st.integers(1, 3)) if kind == "few_distinct" else 0
    seed = draw(st.integers(0, 2**32 - 1))
    return build_verbalized(
        n,
        k,
        kind=kind,
        step=step,
        sharpness=sharpness,
        renormalize=renormalize,
        off_sum=off_sum,
        floor=floor,
        never_top=never_top,
        absent_from_y=absent_from_y,
        distinct=distinct,
        seed=seed,
    )


def build_verbalized(
    n: int,
    k: int,
    *,
    kind: str = "grid",
    step: float = 0.05,
    sharpness: float = 1.0,
    renormalize: bool = False,
    off_sum: float = 1.0,
    floor: float = 0.0,
    never_top: int = 0,
    absent_from_y: int = 0,
    distinct: int = 0,
    seed: int = 0,
) -> Verbalized:
    """The data set :func:`verbalized` draws, from its recipe (for fixed cases too).

    Logits are normal; the true probabilities are their softmax and the labels
    are drawn from them (restricted to the classes not ``absent_from_y``); the
    stated rows are a sharpened softmax (``sharpness``) rounded to the grid
    ``step``. The last ``never_top`` classes are pushed far down, so they are
    never the top answer.
    """
    recipe = {
        "kind": kind,
        "step": step,
        "sharpness": sharpness,
        "off_sum": off_sum,
        "floor": floor,
        "never_top": never_top,
        "absent_from_y": absent_from_y,
        "distinct": distinct,
        "seed": seed,
    }
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n, k))
    logits[:, k - never_top :] -= 8.0
    truth, stated = _stated(rng, logits, sharpness, step)
    if kind == "one_hot":
        stated = np.eye(k)[stated.argmax(axis=1)]
    elif kind == "few_distinct":
        stated = stated[:distinct][rng.integers(0, min(distinct, n), n)]
    elif kind == "mixed":
        one_hot = rng.random(n) < 0.3
        stated[one_hot] = np.eye(k)[stated[one_hot].argmax(axis=1)]
    allowed = np.ones(k)
    allowed[rng.permutation(k)[:absent_from_y]] = 0.0
    y = _draw_labels(rng, truth, allowed)

    if renormalize:
        P = stated * off_sum  # as stated: the caller divides by the sums
    else:
        P = stated + floor  # the snippet floors at 1e-9, then renormalises
        P /= P.sum(axis=1, keepdims=True)
    if kind == "near_duplicates":
        # The same stated value an ulp or two apart, as renormalising leaves it.
        ulps = np.where(P > 0, rng.integers(-2, 3, size=P.shape), 0)
        P = np.minimum(P + ulps * np.spacing(P), 1.0)
    return Verbalized(P=P, y=y, renormalize=renormalize, recipe=recipe)


@st.composite
def unseen_rows(draw, n_classes: int, max_rows: int = 50) -> np.ndarray:
    """New rows of ``n_classes`` columns summing to 1: grid values, uniform, one-hot, continuous."""
    n = draw(st.integers(1, max_rows))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    step = draw(st.sampled_from((*GRID_STEPS, 0.01)))
    _, stated = _stated(rng, rng.normal(scale=2.0, size=(n, n_classes)), 1.0, step)
    rows = np.vstack(
        [
            stated,
            np.full((1, n_classes), 1.0 / n_classes),
            np.eye(n_classes)[:1],
            rng.dirichlet(np.ones(n_classes), size=2),
        ]
    )
    return rows / rows.sum(axis=1, keepdims=True)


def coarse_binary_rows(
    rng: np.random.Generator, n: int, swapped: float, right: float
) -> tuple[np.ndarray, np.ndarray]:
    """Binary rows stating one of six coarse confidences, and gold labels.

    A share ``swapped`` of the rows state it for the second class; the stated
    top class is right with probability ``right``. Draws from ``rng`` in a fixed
    order, so a caller can go on drawing from it.
    """
    confidence = rng.choice([0.55, 0.7, 0.8, 0.9, 0.95, 1.0], size=n)
    P = np.column_stack([confidence, 1 - confidence])
    swap = rng.random(n) < swapped
    P[swap] = P[swap][:, ::-1]
    y = np.where(rng.random(n) < right, P.argmax(axis=1), 1 - P.argmax(axis=1))
    return P, y
