"""The calibration methods ``verbcal fit`` knows, by name: plain data, no imports.

Kept apart from :mod:`verbcal.workflow` (which builds them) so that the
``verbcal`` command can list them without importing scikit-learn.
"""

from __future__ import annotations

__all__ = ["METHODS"]

#: Method name → (what it needs, how to build it). "labels": labelled item rows;
#: "probes": content-free probe rows; "unlabelled": item rows, labels unused.
METHODS: dict[str, tuple[str, str]] = {
    "temperature": ("labels", "invert-softmax temperature scaling (Wang et al. 2024)"),
    "naive-temperature": ("labels", "softmax(p / T), the re-softmax baseline"),
    "contextual": ("probes", "contextual calibration, diagonal (Zhao et al. 2021)"),
    "contextual-bias": ("probes", "contextual calibration, bias mode (Zhao et al. 2021)"),
    "contextual+temperature": ("both", "contextual calibration, then temperature scaling"),
    "batch": ("unlabelled", "batch calibration (Zhou et al. 2023)"),
    "vector": ("labels", "vector scaling on estimated logits"),
    "matrix": ("labels", "matrix (Dirichlet) scaling on estimated logits"),
    "platt": ("labels", "Platt scaling (binary)"),
    "isotonic": ("labels", "one-vs-rest isotonic regression"),
    "histogram": ("labels", "histogram binning"),
    "shrinkage": ("labels", "per stated value, accuracy shrunk toward temperature scaling"),
    "auto": (
        "labels",
        "a pool of the above that the labels support, weighted by cross-validation",
    ),
}
