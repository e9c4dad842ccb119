"""The exceptions verbcal raises, under one base class users can catch.

``InvalidInputError`` and ``ConfigurationError`` are also ``ValueError`` so that
code written against scikit-learn's conventions keeps working.
"""


class VerbcalError(Exception):
    """Base class of every error verbcal raises on purpose."""


class InvalidInputError(VerbcalError, ValueError):
    """An array, label vector or file handed to verbcal is not what it must be."""


class ConfigurationError(VerbcalError, ValueError):
    """A parameter, template, option or setting cannot work as given."""


class BackendError(VerbcalError):
    """The model endpoint failed in a way retrying will not (or did not) fix."""


class ParseError(VerbcalError):
    """A file verbcal wrote or reads back (not model output) cannot be read."""
