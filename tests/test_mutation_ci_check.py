"""scripts/mutation_ci_check.py, the check of CI's mutation subset, on made-up mutmut results."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "mutation_ci_check.py"
spec = importlib.util.spec_from_file_location("mutation_ci_check", SCRIPT)
check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check)


def results(tmp_path, codes):
    mutants = tmp_path / "mutants"
    (mutants / "pkg").mkdir(parents=True)
    (mutants / "pkg" / "m.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    return mutants


def listed(tmp_path, text):
    path = tmp_path / "survivors.txt"
    path.write_text(text)
    return path


def test_expected_survivors_pass_and_new_or_stale_ones_fail(tmp_path, capsys):
    mutants = results(tmp_path, {"m.a__mutmut_1": 0, "m.a__mutmut_2": 1, "m.a__mutmut_3": 0})
    assert check.main(mutants, listed(tmp_path, "# header\nm.a__mutmut_1  # equivalent\nm.a__mutmut_3  # x\n")) == 0
    assert check.main(mutants, listed(tmp_path, "m.a__mutmut_1  # equivalent\n")) == 1
    assert "NEW SURVIVOR (the tests no longer kill it): m.a__mutmut_3" in capsys.readouterr().out
    assert check.main(mutants, listed(tmp_path, "m.a__mutmut_1  # e\nm.a__mutmut_2  # e\nm.a__mutmut_3  # e\n")) == 1
    assert "STALE (killed now; remove it from survivors.txt): m.a__mutmut_2" in capsys.readouterr().out


def test_incomplete_runs_are_not_passed(tmp_path):
    assert check.main(results(tmp_path, {"m.a__mutmut_1": None}), listed(tmp_path, "")) == 2
    assert check.main(tmp_path / "none", listed(tmp_path, "")) == 2


@pytest.mark.parametrize("line", ["m.a__mutmut_1", "m.a__mutmut_1  #  ", f"m.a__mutmut_1  # {check.PLACEHOLDER}"])
def test_a_survivor_listed_without_a_reason_is_refused(tmp_path, line):
    path = listed(tmp_path, f"# header\n{line}\n")
    with pytest.raises(SystemExit, match=r"survivors.txt:2: m\.a__mutmut_1 is listed without the reason"):
        check.main(results(tmp_path, {"m.a__mutmut_1": 0}), path)
