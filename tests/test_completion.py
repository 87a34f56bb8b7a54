"""Shell completion: the scripts print, and a real bash completes commands and options with them."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import irtk_cmd, run_irtk


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_print(shell):
    r = run_irtk("completion", shell)
    assert r.returncode == 0 and b"_IRTK_COMPLETE" in r.stdout


def test_unknown_shell_is_a_usage_error():
    r = run_irtk("completion", "tcsh")
    assert r.returncode == 2 and b"bash, zsh, fish" in r.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completes_commands_and_options_through_the_script():
    bin_dir = os.path.dirname(irtk_cmd()[0])
    script = """
eval "$(irtk completion bash)"
COMP_WORDS=(irtk sim); COMP_CWORD=1; _irtk_completion irtk; echo "1:${COMPREPLY[*]}"
COMP_WORDS=(irtk simulate --max-t); COMP_CWORD=2; _irtk_completion irtk; echo "2:${COMPREPLY[*]}"
"""
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "1:simulate" in r.stdout.splitlines()
    assert "2:--max-turns --max-tokens" in r.stdout.splitlines() or \
        "2:--max-tokens --max-turns" in r.stdout.splitlines()
