#!/usr/bin/env bash
# Mutation testing with mutmut (not run in CI as a whole: the plugin takes hours on one core; CI runs the small
# target ci, through scripts/mutation_ci.sh). Installs mutmut
# into $MUTMUT_SITE (default /tmp/mut-site) if missing, runs it in a scratch copy of the repository
# ($MUTATION_DIR, default /tmp/resmlp-mutation, -tools or -data_prep; kept between runs, so an interrupted run goes on where it
# stopped) and prints the score of every module.
#
# MUTATION_TARGET picks what is mutated and which tests judge the mutants:
#   plugin (default)  fairseq_resmlp/ with the in-process model tests: the [mutmut] section of setup.cfg
#   tools             the evaluation and averaging code (fairseq_resmlp_tools/average.py, eval_checks.py,
#                     tokenized_bleu.py, evaluate.py) with their tests that train nothing (-m "not slow")
#   data_prep         data_prep/stages.py and clean.py with the data_prep tests that need no shared data or fairseq
#   ci                the small subset CI runs (scripts/mutation_ci.sh; a few minutes): fairseq_resmlp_tools/average.py,
#                     fairseq_resmlp/modules/affine.py and channel_mlp.py with their fast unit tests
# mutmut 3 reads only setup.cfg, so for tools, data_prep and ci the script writes their section into the scratch copy.
#
#   bash scripts/mutation.sh                                      # every mutant of the plugin
#   bash scripts/mutation.sh "fairseq_resmlp.modules.token_mixing.*"   # one module (mutmut's name globs)
#   MUTATION_TARGET=tools bash scripts/mutation.sh                # the evaluation and averaging code
#   MUTATION_TARGET=tools bash scripts/mutation.sh "fairseq_resmlp_tools.average.*"
#   MUTATION_TARGET=data_prep bash scripts/mutation.sh            # data_prep's stage and cleaning logic
#   MUTATION_SURVIVORS=1 bash scripts/mutation.sh                 # only the survivors and those not run yet
#   MUTATION_FRESH=1 bash scripts/mutation.sh ...                 # forget earlier results (after code changes)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RESMLP_VENV:-$repo/.venv}"
python="$venv/bin/python"
[ -x "$python" ] || python="$(command -v python3)"
site="${MUTMUT_SITE:-/tmp/mut-site}"
target="${MUTATION_TARGET:-plugin}"
case "$target" in plugin | tools | data_prep | ci) ;; *)
    echo "MUTATION_TARGET=$target: choose plugin, tools, data_prep or ci" >&2
    exit 2
    ;;
esac
if [ "$target" = plugin ]; then work="${MUTATION_DIR:-/tmp/resmlp-mutation}"; else
    work="${MUTATION_DIR:-/tmp/resmlp-mutation-$target}"; fi
version="3.8.1"

if ! PYTHONPATH="$site" "$python" -c "import mutmut, sys; sys.exit(mutmut.__version__ != '$version')" 2>/dev/null; then
    echo "installing mutmut $version into $site"
    "$python" -m pip install -q --target "$site" "mutmut==$version"
fi

# A scratch copy of the tracked and untracked (not ignored) files: mutmut writes mutants/ next to the code.
if [ "${MUTATION_FRESH:-0}" = 1 ]; then rm -rf "$work"; fi
mkdir -p "$work"
(cd "$repo" && git ls-files -co --exclude-standard -z) | (cd "$repo" && xargs -0 cp --parents -t "$work" 2>/dev/null || true)

cd "$work"
# The packages not mutated are copied into mutants/ too: the tests import them from there, not from the installed
# (editable) project, which would mix the scratch copy with the working tree.
others() { printf '    %s\n' fairseq_resmlp fairseq_resmlp_tools data_prep | grep -v "$1"; }
common='pytest_add_cli_args =
    -p
    no:cacheprovider
    -W
    ignore'
if [ "$target" = tools ]; then
    # Tests that train the toy model or run fairseq-generate take tens of seconds each, per mutant: left out.
    cat > setup.cfg <<EOF
[mutmut]
source_paths = fairseq_resmlp_tools/
also_copy =
$(others fairseq_resmlp_tools)
only_mutate =
    fairseq_resmlp_tools/average.py
    fairseq_resmlp_tools/eval_checks.py
    fairseq_resmlp_tools/tokenized_bleu.py
    fairseq_resmlp_tools/evaluate.py
$common
    -m
    not slow
pytest_add_cli_args_test_selection =
    tests/test_average.py
    tests/test_eval_checks.py
    tests/test_evaluate_units.py
    tests/test_evaluate_inprocess.py
    tests/test_evaluate.py
    tests/test_evaluate_bad_input.py
    tests/test_checkpoint_faults.py
EOF
elif [ "$target" = ci ]; then
    # Small modules whose tests take a second and whose survivors are all explained (tests/mutation_ci_survivors.txt).
    # The incremental-decoding contract (perturbed weights, nonzero biases) kills a folded Affine that drops fc1's bias.
    cat > setup.cfg <<EOF
[mutmut]
source_paths =
    fairseq_resmlp/
    fairseq_resmlp_tools/
also_copy =
$(others fairseq_resmlp)
only_mutate =
    fairseq_resmlp_tools/average.py
    fairseq_resmlp/modules/affine.py
    fairseq_resmlp/modules/channel_mlp.py
$common
    -m
    not slow
pytest_add_cli_args_test_selection =
    tests/test_average.py
    tests/test_modules.py
    tests/test_contracts.py::test_wrong_options_are_clear_errors
    tests/test_contracts.py::test_initial_values
    tests/test_contracts.py::test_every_dropout_can_be_named_for_retain_dropout_modules
    tests/test_contracts.py::test_incremental_decoding_equals_full_decoding[resmlp-no-beam-size]
EOF
elif [ "$target" = data_prep ]; then
    # Left out: what needs the shared data or fairseq, and the cases of the re-run matrix that take the same
    # paths as others (docs/data_prep.md); each is a slow run per mutant.
    selection="$("$python" -m pytest -p no:cacheprovider --collect-only -q tests/test_data_prep.py \
        tests/test_data_prep_faults.py tests/test_clean_mutants.py -m "not slow" -k "not wmt14 and not multi30k and not tatoeba and not download \
        and not damaged_archive and not layout and not archive and not cli_prints and not kill and not real_fairseq \
        and not subprocess and not decode and not parallel_encoding and not split_changes and not impossible \
        and not sgm and not options_come and not parallel_bad" | grep :: | sed 's/^/    /')"
    cat > setup.cfg <<EOF
[mutmut]
source_paths = data_prep/
also_copy =
$(others data_prep)
only_mutate =
    data_prep/stages.py
    data_prep/clean.py
$common
pytest_add_cli_args_test_selection =
$selection
EOF
fi
# Each mutant runs its tests in a fresh pytest session: the export tests would re-export (torch.export, ~5 s) every
# time. They reuse the folders exported once, from $RESMLP_EXPORT_CACHE (tests/conftest.py, export_or_reuse: only
# while no mutant or a mutant of export_runtime.py is active, so the exporter's own mutants still export).
if [ "$target" = plugin ]; then export RESMLP_EXPORT_CACHE="${RESMLP_EXPORT_CACHE:-$work/export-cache}"; fi
export PYTHONPATH="$site" OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
names=("$@")
if [ "${MUTATION_SURVIVORS:-0}" = 1 ] && [ -d mutants ]; then
    # Naming mutants makes mutmut run them again; name the surviving ones and those not run yet (an interrupted
    # run), of the given globs if any.
    mapfile -t names < <("$python" - "$@" <<'PY'
import fnmatch, json, sys
from pathlib import Path
globs = sys.argv[1:] or ["*"]
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
        if code in (0, 33, None) and any(fnmatch.fnmatch(name, g) for g in globs):
            print(name)
PY
)
    echo "running ${#names[@]} surviving or not yet run mutants"
    [ "${#names[@]}" -gt 0 ] || names=("no-survivors-left")
fi
if [ "${names[0]:-}" != "no-survivors-left" ]; then
    "$python" -m mutmut run --max-children "${MUTATION_JOBS:-1}" "${names[@]}" || true
fi
"$python" - <<'PY'
"""Score per module from mutmut's result files, and the surviving mutants."""
import json
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

survivors = []
print(f"{'module':<48}{'killed':>8}{'timeout':>9}{'survived':>10}{'no tests':>10}{'not run':>9}{'score':>8}")
for meta in sorted(Path("mutants").rglob("*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    counts = Counter(status_by_exit_code[c] for c in codes.values())
    survivors += [k for k, c in codes.items() if status_by_exit_code[c] in ("survived", "no tests")]
    tried = counts["killed"] + counts["timeout"] + counts["survived"] + counts["no tests"]
    score = f"{100 * (counts['killed'] + counts['timeout']) / tried:.0f}%" if tried else "-"
    name = str(meta.relative_to("mutants"))[: -len(".meta")]
    print(f"{name:<48}{counts['killed']:>8}{counts['timeout']:>9}{counts['survived']:>10}{counts['no tests']:>10}"
          f"{counts['not checked']:>9}{score:>8}")
print("\nsurviving mutants (show one with: cd $MUTATION_DIR && PYTHONPATH=$MUTMUT_SITE python -m mutmut show NAME):")
print("\n".join(f"  {s}" for s in survivors) or "  none")
PY
