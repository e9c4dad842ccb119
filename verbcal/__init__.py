"""verbcal: calibrate the verbalized probabilities of API-only language models."""

from verbcal._errors import (
    BackendError,
    ConfigurationError,
    InvalidInputError,
    ParseError,
    VerbcalError,
)
from verbcal.logits import invert_softmax, softmax

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "ConfigurationError",
    "InvalidInputError",
    "ParseError",
    "VerbcalError",
    "__version__",
    "invert_softmax",
    "softmax",
]
