# The reference tools' venv (llama-cpp-python, PyTorch + transformers + PEFT, gguf-py), shared
# by ops/bench and ops/requantize-model; sourced, not run. Installs only what is missing.
venv="${HONE_CACHE:-$HOME/.cache/hone}/venv-ref"

ensure_llamacpp() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c "import llama_cpp" 2>/dev/null && return 0
    echo "$(basename "$0"): building llama-cpp-python 0.3.36 into $venv (one time, ~15 min)" >&2
    # Native without AMX: gcc 12.2 drops the AMX tile-config stores (NOTES.md).
    CMAKE_ARGS='-DGGML_NATIVE=ON "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"' \
        CMAKE_BUILD_PARALLEL_LEVEL=2 "$venv/bin/pip" install -q llama-cpp-python==0.3.36 >&2
}

ensure_gguf() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c "import gguf" 2>/dev/null || "$venv/bin/pip" install -q gguf==0.19.0 >&2
}

ensure_torch() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -c "import torch, transformers, peft, gguf" 2>/dev/null && return 0
    echo "$(basename "$0"): installing PyTorch (CPU) + transformers + PEFT into $venv (one time)" >&2
    "$venv/bin/pip" install -q torch==2.13.0 transformers==5.23.0 peft==0.21.2 gguf==0.19.0 safetensors sentencepiece >&2
}
