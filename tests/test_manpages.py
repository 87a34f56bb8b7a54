"""The man pages are generated from the CLI (irtk.cli.manpages): a stale page fails here."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from irtk.cli.manpages import main, render_pages
from tests.conftest import ROOT

MAN = ROOT / "man"


def test_committed_pages_match_the_cli():
    assert main([str(MAN), "--check"]) == 0, "run: python -m irtk.cli.manpages man"


def test_every_command_has_a_page_with_its_options():
    import typer

    from irtk.cli.main import build_app

    pages = render_pages(MAN / "src")
    group = typer.main.get_command(build_app())
    for name, command in group.commands.items():
        page = pages[f"irtk-{name}.1"]
        for param in command.params:
            for flag in getattr(param, "opts", []):
                if flag.startswith("-"):
                    assert flag.replace("-", "\\-") in page, (name, flag)
        assert "irtk\\-" + name.replace("-", "\\-") in pages["irtk.1"]


def test_a_changed_option_makes_the_check_fail(tmp_path):
    shutil.copytree(MAN, tmp_path / "man")
    page = tmp_path / "man" / "irtk-show.1"
    page.write_text(page.read_text().replace("\\-\\-head", "\\-\\-heads"))
    assert main([str(tmp_path / "man"), "--check"]) == 1


@pytest.mark.skipif(shutil.which("man") is None, reason="man is not installed")
def test_man_renders_the_top_page():
    r = subprocess.run(["man", "-l", str(MAN / "irtk.1")], capture_output=True, env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0 and b"COMMANDS" in r.stdout and b"irtk simulate" in r.stdout
