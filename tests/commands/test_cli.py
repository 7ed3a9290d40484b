import re
import subprocess
import sys

import pytest

from kvinject import cli


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert f"  {name} " in out


def test_unknown_command_is_named(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["reprot"])
    assert stop.value.code == 2
    assert "reprot" in capsys.readouterr().err


def test_help_imports_no_command_module():
    code = "import sys; from kvinject import cli\ntry: cli.main(['--help'])\nexcept SystemExit: pass\n" \
           "print([m for m in sys.modules if m.startswith('kvinject.commands.') or m in ('torch', 'lm_eval')])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_every_command_spells_its_flags_in_snake_case(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    flags = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", capsys.readouterr().out))
    assert "--help" in flags
    assert [flag for flag in flags if "-" in flag[2:] or flag != flag.lower()] == []


def user_errors(tmp):
    """Per command: (a missing folder, a bad flag value), each to exit 2 with one line."""
    missing = str(tmp / "nowhere")
    return {
        "report": (["report", missing, "--output_path", str(tmp / "r")],
                   ["report", str(tmp), "--output_path", str(tmp / "r"), "--points", "5,x"]),
        "single": (["single", "--model", "m", "--task", "adaptation_semantic", "--doc", "1", "--include_path", missing],
                   ["single", "--model", "m", "--original", "a", "--alternative", "b", "--injection_points", "5,x"]),
        "analyze": (["analyze", "--model", "m", "--dataset", f"{missing}/pairs.json", "--output_path", str(tmp / "o")],
                    ["analyze", "--model", "m", "--task", "adaptation_math", "--limit", "0", "--output_path", str(tmp / "o")]),
        "prm": (["prm", missing, "--judge", "smollm2-135m"],
                ["prm", str(tmp), "--judge", "smollm2-135m", "--confidence", "2"]),
        "train": (["train", "--output_path", str(tmp / "run"), "--model_args", f"pretrained={missing}"],
                  ["train", "--output_path", str(tmp / "run"), "--eval_fraction", "2"]),
        "compare": (["compare", missing, str(tmp), "--output_path", str(tmp / "r")],
                    ["compare", str(tmp), "--points", "5", "x"]),
        "study": (["study", f"{missing}/study.yaml"],
                  ["study", f"{missing}/study.yaml", "--bootstrap_resamples", "x"]),
    }


def test_user_errors_table_covers_every_command(tmp_path):
    assert set(user_errors(tmp_path)) == set(cli.COMMANDS)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
@pytest.mark.parametrize("case", ["missing folder", "bad value", "unknown flag"])
def test_a_user_error_exits_2_with_one_line(name, case, tmp_path, capsys):
    missing, bad = user_errors(tmp_path)[name]
    argv = {"missing folder": missing, "bad value": bad, "unknown flag": [name, "--no_such_flag", "1"]}[case]
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"kvinject {name}"), err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists() and not (tmp_path / "o").exists() and not (tmp_path / "run").exists()
