"""verbcal: calibrate the verbalized probabilities of API-only language models.

The public API is what ``__all__`` lists. The elicitation side (``Elicitor``,
``OpenAIBackend``, ``ResponseCache``) is imported on first use, so that the
calibration math does not pay for the HTTP client's import.
"""

from typing import Any

from verbcal import elicit
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
    invert_softmax,
    softmax,
)
from verbcal.elicit import (
    ParseResult,
    content_free_inputs,
    list_templates,
    load_template,
    parse_verbalized,
)
from verbcal.errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
    ParseError,
    VerbcalError,
)
from verbcal.persist import CalibratorRecord, load_calibrator, save_calibrator
from verbcal.predictions import Item, Prediction, read_items, read_predictions, write_predictions

__version__ = "0.1.0"

_LAZY = frozenset({"Elicitor", "OpenAIBackend", "RetryPolicy", "ResponseCache"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(elicit, name)
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
