"""Calibrators: probability rows in, calibrated probability rows out.

Every calibrator follows scikit-learn's estimator contract: ``fit(P, y)`` on an
(n, K) array of probability rows and gold class indices ``0..K-1``, then
``predict_proba(P)`` / ``predict(P)``. Input is checked once, at ``fit`` and
``predict_proba``; pass ``renormalize=True`` to accept rows that do not sum to 1.

=========================== ===================================================
Calibrator                  Map
=========================== ===================================================
TemperatureScaling          ``softmax(log(p + eps) / T)`` (Wang et al. 2024)
NaiveTemperatureScaling     ``softmax(p / T)`` (the "re-softmax" baseline)
ContextualCalibration       content-free prior removed (Zhao et al. 2021), no labels
BatchCalibration            batch prior removed in logit space (Zhou et al. 2023), no labels
VectorScaling               ``softmax(w * log(p + eps) + b)``
MatrixScaling               ``softmax(W log(p + eps) + b)``, Dirichlet (Kull et al. 2019)
PlattScaling                logistic fit on the log-odds, binary only
IsotonicCalibration         one-vs-rest isotonic, floored and renormalised
HistogramBinning            one-vs-rest equal-width bins, floored and renormalised
ShrinkageBinning            per stated value, accuracy shrunk toward temperature scaling
CalibratorChain             calibrators applied one after the other
LinearPool                  a weighted average of calibrators' rows
MultiSignalCalibrator       verbalized + token probs + sample spread + prior, regularised
TokenProbsCalibrator        a calibrator applied to the token probabilities
AutoCalibrator              pools candidates with weights fitted by cross-validation
=========================== ===================================================
"""

from verbcal.calibrators.auto import AutoCalibrator, CalibratorChain, LinearPool
from verbcal.calibrators.base import BaseCalibrator
from verbcal.calibrators.binning import HistogramBinning, IsotonicCalibration, ShrinkageBinning
from verbcal.calibrators.logits import invert_softmax, softmax
from verbcal.calibrators.multisignal import MultiSignalCalibrator, TokenProbsCalibrator
from verbcal.calibrators.scaling import (
    BatchCalibration,
    ContextualCalibration,
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    TemperatureScaling,
    VectorScaling,
)

__all__ = [
    "AutoCalibrator",
    "BaseCalibrator",
    "BatchCalibration",
    "CalibratorChain",
    "ContextualCalibration",
    "HistogramBinning",
    "IsotonicCalibration",
    "LinearPool",
    "MatrixScaling",
    "MultiSignalCalibrator",
    "NaiveTemperatureScaling",
    "PlattScaling",
    "ShrinkageBinning",
    "TemperatureScaling",
    "TokenProbsCalibrator",
    "VectorScaling",
    "invert_softmax",
    "softmax",
]

#: The calibrator classes (what ``verbcal fit`` and saved calibrator files can name).
CALIBRATORS = tuple(name for name in __all__ if name[0].isupper() and name != "BaseCalibrator")
