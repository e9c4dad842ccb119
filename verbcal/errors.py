"""The exceptions verbcal raises, under one base class users can catch.

``InvalidInputError`` and ``ConfigurationError`` are also ``ValueError`` so that
code written against scikit-learn's conventions keeps working::

    VerbcalError
    ├── InvalidInputError (ValueError)   arrays, labels, files handed to verbcal
    │   └── ParseError                   a file that cannot be read (which line, why)
    ├── ConfigurationError (ValueError)  parameters, options, templates, settings
    └── BackendError                     the model endpoint failed for good

Model output is never an error: the answer parser reports what it could not
read in each prediction's status instead of raising.
"""


class VerbcalError(Exception):
    """Base class of every error verbcal raises on purpose."""


class InvalidInputError(VerbcalError, ValueError):
    """An array, label vector or file handed to verbcal is not what it must be."""


class ConfigurationError(VerbcalError, ValueError):
    """A parameter, template, option or setting cannot work as given."""


class BackendError(VerbcalError):
    """The model endpoint failed in a way retrying will not (or did not) fix."""


class ParseError(InvalidInputError):
    """A file handed to verbcal cannot be read: not text, not JSON, not the expected records.

    Raised for items, predictions, calibrator files and packaged data, with
    the file and line in the message. Not for model output (never raised by
    the answer parser).
    """
