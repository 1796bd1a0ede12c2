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
want="$(cat "$repo/pyproject.toml" "$repo/requirements.txt" "$repo/requirements-test.txt" "$repo/scripts/setup.sh" \
  | sha256sum | cut -d' ' -f1)"

log() { echo "[setup] $*" >&2; }

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && \
   "$venv/bin/python" -c "import fairseq, fairseq_resmlp, fairseq_resmlp_tools, sentencepiece, sacrebleu" >/dev/null 2>&1 && \
   [ -x "$venv/bin/resmlp-evaluate" ]; then
  log "environment $venv is up to date"
  exit 0
fi

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))'; then
  log "error: $python is $("$python" -V 2>&1); Python >= 3.9 is needed (3.11 recommended)"
  exit 1
fi
[ -x "$venv/bin/python" ] || { log "creating $venv"; "$python" -m venv "$venv"; }
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)

log "tools"
"${pip[@]}" -q --upgrade pip "setuptools<81" wheel

if "$venv/bin/python" -c 'import torch, sys; v = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 1))' 2>/dev/null; then
  log "torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)') already installed"
else
  log "installing ${TORCH_SPEC:-torch==2.13.0}"
  "${pip[@]}" -q "${TORCH_SPEC:-torch==2.13.0}"
fi

# This project's dependencies are requirements.txt (pyproject.toml reads the same file) and, for the tests and lint,
# requirements-test.txt. fairseq itself is installed below with --no-deps, because its metadata asks for torchaudio
# (only its speech models import it) whose wheels pin other torch versions; its other dependencies are listed here.
log "dependencies"
"${pip[@]}" -q -r <(grep -v '^fairseq' "$repo/requirements.txt") -r "$repo/requirements-test.txt" \
  cython cffi regex bitarray scikit-learn packaging PyYAML "hydra-core==1.3.2" "omegaconf==2.3.0" \
  "antlr4-python3-runtime==4.9.3"

# The fairseq line of requirements.txt that applies to this Python (fairseq-fixed on >= 3.11).
fairseq_spec="$("$venv/bin/python" - "$repo/requirements.txt" <<'PY'
import sys
from packaging.requirements import Requirement
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line.startswith("fairseq"):
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate():
            print(f"{req.name}{req.specifier}")
PY
)"
# fairseq-fixed builds from source on Python 3.11 (about 5 minutes on 2 cores); pip caches the wheel for later runs.
log "$fairseq_spec"
"${pip[@]}" -q --no-build-isolation --no-deps "$fairseq_spec"

log "fairseq-resmlp (editable, from pyproject.toml: the plugin, data_prep, the tools and their resmlp-* commands)"
"${pip[@]}" -q --no-build-isolation --no-deps -e "$repo"

"$venv/bin/python" -c "import fairseq, fairseq_resmlp; print('[setup] fairseq', fairseq.__version__, '| fairseq_resmlp', fairseq_resmlp.__version__)" 2>/dev/null
echo "$want" > "$stamp"
log "done: activate with 'source $venv/bin/activate'"
