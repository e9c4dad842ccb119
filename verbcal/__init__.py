"""verbcal: calibrate the verbalized probabilities of API-only language models.

The public API is what ``__all__`` lists. The elicitation side (``Elicitor``,
``OpenAIBackend``, ``ResponseCache``) is imported on first use, so that the
calibration math does not pay for the HTTP client's import.
"""

from verbcal._errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
    ParseError,
    VerbcalError,
)
from verbcal.calibrators import (
    AutoCalibrator,
    BatchCalibration,
    CalibratorChain,
    ContextualCalibration,
    HistogramBinning,
    IsotonicCalibration,
    MatrixScaling,
    NaiveTemperatureScaling,
    PlattScaling,
    ShrinkageBinning,
    TemperatureScaling,
    VectorScaling,
)
from verbcal.logits import invert_softmax, softmax
from verbcal.parse import ParseResult, parse_verbalized
from verbcal.persist import CalibratorRecord, load_calibrator, save_calibrator
from verbcal.predictions import Item, Prediction, read_items, read_predictions, write_predictions
from verbcal.templates import content_free_inputs, list_templates, load_template

__version__ = "0.1.0"

_LAZY = {
    "Elicitor": "verbcal.elicit",
    "OpenAIBackend": "verbcal.backends",
    "RetryPolicy": "verbcal.backends",
    "ResponseCache": "verbcal.cache",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verbcal' has no attribute {name!r}")


__all__ = [
    "AutoCalibrator",
    "BackendError",
    "BatchCalibration",
    "CalibratorChain",
    "CalibratorRecord",
    "ConfigurationError",
    "ContextualCalibration",
    "Elicitor",
    "HistogramBinning",
    "InvalidInputError",
    "IsotonicCalibration",
    "Item",
    "MatrixScaling",
    "NaiveTemperatureScaling",
    "OpenAIBackend",
    "ParseError",
    "ParseResult",
    "PlattScaling",
    "Prediction",
    "ResponseCache",
    "RetryPolicy",
    "ShrinkageBinning",
    "TemperatureScaling",
    "VectorScaling",
    "VerbcalError",
    "__version__",
    "content_free_inputs",
    "invert_softmax",
    "list_templates",
    "load_calibrator",
    "load_template",
    "parse_verbalized",
    "read_items",
    "read_predictions",
    "save_calibrator",
    "softmax",
    "write_predictions",
]
