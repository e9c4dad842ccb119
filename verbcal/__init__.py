"""verbcal: calibrate the verbalized probabilities of API-only language models.

The public API is what ``__all__`` lists. Every name is imported on first use
(PEP 562), so that ``import verbcal`` and the ``verbcal`` command's usage
errors do not pay for scikit-learn, SciPy or the HTTP client until they are
needed (about 2.5 s on a busy 2-core machine, against 0.2 s).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from verbcal.errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
    ParseError,
    VerbcalError,
)

if TYPE_CHECKING:  # the names as type checkers and IDEs should see them
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
        Elicitor,
        OpenAIBackend,
        ParseResult,
        ResponseCache,
        RetryPolicy,
        content_free_inputs,
        list_templates,
        load_template,
        parse_verbalized,
    )
    from verbcal.persist import CalibratorRecord, load_calibrator, save_calibrator
    from verbcal.predictions import (
        Item,
        Prediction,
        read_items,
        read_predictions,
        write_predictions,
    )

__version__ = "0.1.0"

#: Where each lazily imported public name lives.
_HOME = {
    **dict.fromkeys(
        (
            "AutoCalibrator",
            "BatchCalibration",
            "CalibratorChain",
            "ContextualCalibration",
            "HistogramBinning",
            "IsotonicCalibration",
            "MatrixScaling",
            "NaiveTemperatureScaling",
            "PlattScaling",
            "ShrinkageBinning",
            "TemperatureScaling",
            "VectorScaling",
            "invert_softmax",
            "softmax",
        ),
        "verbcal.calibrators",
    ),
    **dict.fromkeys(
        (
            "Elicitor",
            "OpenAIBackend",
            "ParseResult",
            "ResponseCache",
            "RetryPolicy",
            "content_free_inputs",
            "list_templates",
            "load_template",
            "parse_verbalized",
        ),
        "verbcal.elicit",
    ),
    **dict.fromkeys(("CalibratorRecord", "load_calibrator", "save_calibrator"), "verbcal.persist"),
    **dict.fromkeys(
        ("Item", "Prediction", "read_items", "read_predictions", "write_predictions"),
        "verbcal.predictions",
    ),
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(import_module(_HOME[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'verbcal' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
