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
