#!/usr/bin/env bash
# One-time, idempotent set-up on a bare machine: a virtual environment with torch, fairseq and this project.
#
#   bash scripts/setup.sh            # creates .venv (or $RESMLP_VENV) and installs everything
#
# A second run finds the stamp written at the end and only checks that the imports still work.
# Environment: PYTHON (interpreter, default python3), RESMLP_VENV (default .venv in the repo),
# TORCH_SPEC (default torch==2.13.0; skipped when a torch >= 2.1 is already in the environment).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RESMLP_VENV:-$repo/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.fairseq-resmlp-setup"
want="$(cat "$repo/setup.py" "$repo/scripts/setup.sh" | sha256sum | cut -d' ' -f1)"

log() { echo "[setup] $*" >&2; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && \
   "$venv/bin/python" -c "import fairseq, fairseq_resmlp, sentencepiece, sacrebleu" >/dev/null 2>&1; then
  log "environment $venv is up to date"
  exit 0
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
  log "error: $python is $("$python" -V 2>&1); Python >= 3.9 is needed (3.11 recommended)"
  exit 1
fi
[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
py_minor="$("$venv/bin/python" -c 'import sys; print(sys.version_info[1])')"

log "tools"
"${pip[@]}" -q --upgrade pip "setuptools<81" wheel

if "$venv/bin/python" -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))' 2>/dev/null; then
  log "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') already installed"
else
  log "installing ${TORCH_SPEC:-torch==2.13.0}"
  "${pip[@]}" -q "${TORCH_SPEC:-torch==2.13.0}"
fi

# fairseq's own dependencies minus torchaudio (only its speech models import it, and its wheels pin other
# torch versions), plus what this project's scripts and tests use.
log "dependencies"
"${pip[@]}" -q numpy cython cffi regex tqdm bitarray scikit-learn packaging PyYAML \
  "hydra-core==1.3.2" "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" \
  "sacrebleu>=2" sentencepiece pytest matplotlib ruff

if [ "$py_minor" -ge 11 ]; then
  # Builds from source on Python 3.11 (about 5 minutes on 2 cores); pip caches the wheel for later runs.
  log "fairseq-fixed==0.12.3.1 (official fairseq does not import on Python >= 3.11)"
  "${pip[@]}" -q --no-build-isolation --no-deps "fairseq-fixed==0.12.3.1"
else
  log "fairseq==0.12.2"
  "${pip[@]}" -q --no-build-isolation --no-deps "fairseq==0.12.2"
fi

log "fairseq-resmlp (editable)"
"${pip[@]}" -q --no-build-isolation --no-deps -e "$repo"

"$venv/bin/python" -c "import fairseq, fairseq_resmlp; print('[setup] fairseq', fairseq.__version__, '| fairseq_resmlp', fairseq_resmlp.__version__)" 2>/dev/null
echo "$want" > "$stamp"
log "done: activate with 'source $venv/bin/activate'"
