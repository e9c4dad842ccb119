import subprocess
import sys

import verbcal


def test_every_public_name_resolves():
    for name in verbcal.__all__:
        assert getattr(verbcal, name) is not None, name


def test_errors_form_one_hierarchy():
    for name in ("BackendError", "ConfigurationError", "InvalidInputError", "ParseError"):
        assert issubclass(getattr(verbcal, name), verbcal.VerbcalError)
    assert issubclass(verbcal.InvalidInputError, ValueError)
    assert issubclass(verbcal.ConfigurationError, ValueError)


def test_core_math_does_not_import_the_http_client_or_plotting():
    code = (
        "import sys, verbcal, verbcal.metrics, verbcal.thresholds; "
        "print(sorted(m for m in ('openai', 'matplotlib', 'pandas', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
