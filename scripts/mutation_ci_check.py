"""Check a mutmut run against the survivors we expect: the mutation subset of CI (scripts/mutation_ci.sh).

    python scripts/mutation_ci_check.py MUTANTS_DIR tests/mutation_ci_survivors.txt

Fails (exit 1) when a mutant survives that the list does not name (a test got weaker, or new code has no test) or
when a listed mutant was killed or no longer exists (the list is stale); exit 2 when the run is incomplete (mutants
not run, or no results at all). Each line of the list is ``mutant-name  # why it may survive``.
"""

import json
import sys
from pathlib import Path
from typing import Dict, Optional

# mutmut 3's exit codes (mutmut.stats.status_by_exit_code): 0 survived, 5 and 33 no tests; None not run, 2
# interrupted, 34 skipped. Everything else (a failing test, a timeout, a crash) killed the mutant.
SURVIVED = {0, 5, 33}
NOT_RUN = {None, 2, 34}


def read_results(mutants: Path) -> Dict[str, Optional[int]]:
    results: Dict[str, Optional[int]] = {}
    for meta in sorted(mutants.rglob("*.py.meta")):
        results.update(json.loads(meta.read_text(encoding="utf-8"))["exit_code_by_key"])
    return results


PLACEHOLDER = "<reason needed: why is it harmless?>"


def read_expected(path: Path) -> Dict[str, str]:
    """{mutant: reason}; a listed mutant without a reason (or with the placeholder this check prints) is refused."""
    expected = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name, _, reason = line.partition("#")
        if name.strip():
            if not reason.strip() or reason.strip() == PLACEHOLDER:
                raise SystemExit(f"{path}:{number}: {name.strip()} is listed without the reason it may survive")
            expected[name.strip()] = reason.strip()
    return expected


def main(mutants: Path, expected_path: Path) -> int:
    results = read_results(mutants)
    expected = read_expected(expected_path)
    if not results:
        print(f"mutation subset: no mutmut results under {mutants} (mutmut failed before running mutants)")
        return 2
    not_run = sorted(k for k, code in results.items() if code in NOT_RUN)
    survivors = {k for k, code in results.items() if code in SURVIVED}
    new = sorted(survivors - set(expected))
    stale = sorted(set(expected) - survivors)
    killed = len(results) - len(survivors) - len(not_run)
    print(
        f"mutation subset: {len(results)} mutants, {killed} killed, {len(survivors)} survived "
        f"({len(expected)} expected in {expected_path.name}), {len(not_run)} not run"
    )
    for name in not_run:
        print(f"  NOT RUN: {name}")
    for name in new:
        print(f"  NEW SURVIVOR (the tests no longer kill it): {name}")
    for name in stale:
        why = "killed now" if name in results else "no such mutant now"
        print(f"  STALE ({why}; remove it from {expected_path.name}): {name}")
    if not_run:
        return 2
    if not (new or stale):
        return 0
    if new:
        print(
            "A new survivor means a test got weaker, or new code in a mutated module has no test. See it with\n"
            "  MUTATION_CI_KEEP=1 bash scripts/mutation_ci.sh; cd <the scratch dir it prints>/copy &&\n"
            "  PYTHONPATH=${MUTMUT_SITE:-/tmp/mut-site} python -m mutmut show NAME\n"
            "then strengthen the test, or, if the mutant is harmless, list it with the reason."
        )
    print("Changing a mutated module renumbers its mutants (names end in __mutmut_N): then re-read every survivor.")
    print(f"The survivors of this run, as {expected_path} would list them:")
    for name in sorted(survivors):
        print(f"{name}  # {expected.get(name) or PLACEHOLDER}")
    return 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
