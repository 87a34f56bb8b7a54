"""Man pages generated from the CLI itself: ``irtk(1)`` and one ``irtk-COMMAND(1)`` per command.

The SYNOPSIS, OPTIONS and (for ``irtk(1)``) COMMANDS sections come from the Typer/click objects,
so they cannot drift from ``--help``. Prose a person wrote (NAME, DESCRIPTION, EXAMPLES, SEE ALSO,
...) lives in ``man/src/<page>.roff`` and is spliced in; a command without a fragment gets its
help text as DESCRIPTION. ``tests/test_manpages.py`` fails when a committed page is stale.

    python -m irtk.cli.manpages man          # regenerate
    python -m irtk.cli.manpages man --check  # exit 1 when a page differs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from irtk import __version__

_HEADER_SECTIONS = ("NAME",)  # fragment sections that go before the generated SYNOPSIS
_AFTER_OPTIONS_FROM = "DESCRIPTION"  # the generated OPTIONS follow this fragment section


def roff_escape(text: str) -> str:
    """Escape text for roff: backslashes, hyphens (so they copy as '-'), leading dots/quotes."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def _sections(fragment: str) -> list[tuple[str, str]]:
    """Split a roff fragment into (section name, body) pairs, in order."""
    parts = re.split(r"^\.SH +\"?([^\"\n]+)\"?\n", fragment, flags=re.MULTILINE)
    return [(parts[i].strip(), parts[i + 1]) for i in range(1, len(parts), 2)]


def _is_argument(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _option_lines(param: Any) -> list[str]:
    if _is_argument(param):
        return []
    flags = [*param.opts, *param.secondary_opts]
    name = ", ".join(roff_escape(f) for f in flags)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    kind = str(param.metavar or getattr(annotation, "__name__", None) or "value").strip("<>")
    metavar = "" if param.is_flag or param.count else f" \\fI{roff_escape(kind.upper())}\\fR"
    lines = [".TP", f"\\fB{name}\\fR{metavar}"]
    help_text = roff_escape(getattr(param, "help", None) or "")
    extras = []
    if param.envvar:
        envvars = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
        extras.append("env " + ", ".join(roff_escape(e) for e in envvars))
    default = param.default
    if getattr(param, "show_default", True) is not False and default not in (None, (), [], False) \
            and not callable(default) and not param.count:
        extras.append(f"default {roff_escape(str(default))}")
    lines.append(help_text + (f" [{'; '.join(extras)}]" if extras else ""))
    return lines


def _synopsis(path: str, command: Any) -> str:
    args = " ".join(f"[\\fI{a.name.upper()}\\fR]" for a in command.params if _is_argument(a))
    return f".B {roff_escape(path)}\n[\\fIOPTIONS\\fR] {args}".rstrip()


def _page(title: str, name: str, summary: str, synopsis: str, generated: list[tuple[str, str]],
          fragment: str | None, description: str) -> str:
    head = f'.TH {title} 1 "2026" "irtk {__version__}" "irtk manual"\n'
    sections = _sections(fragment) if fragment else [
        ("NAME", f"{roff_escape(name)} \\- {roff_escape(summary)}\n"),
        ("DESCRIPTION", roff_escape(description) + "\n"),
    ]
    out = [head]
    placed = False
    for section, body in sections:
        out.append(f".SH {section}\n{body}")
        if section in _HEADER_SECTIONS:
            out.append(f".SH SYNOPSIS\n{synopsis}\n")
        if section == _AFTER_OPTIONS_FROM:
            out.extend(f".SH {s}\n{b}" for s, b in generated)
            placed = True
    if not placed:
        out.extend(f".SH {s}\n{b}" for s, b in generated)
    return "".join(out)


def _first_sentence(text: str) -> str:
    text = " ".join(text.split())
    head = re.split(r"(?<=[.:])\s", text, maxsplit=1)[0]
    return head.rstrip(".:")


def render_pages(fragments: Path) -> dict[str, str]:
    """Every page, by file name, generated from the CLI and the fragments in ``fragments``."""
    import typer

    from irtk.cli.main import build_app

    group = typer.main.get_command(build_app())  # typer's vendored click: duck-typed here
    pages = {}

    def fragment(stem: str) -> str | None:
        path = fragments / f"{stem}.roff"
        return path.read_text(encoding="utf-8") if path.is_file() else None

    commands = list(group.commands.items())  # registration order, as `irtk --help` lists them
    listing = []
    for name, command in commands:
        help_text = command.help or ""
        listing += [".TP", f"\\fBirtk {roff_escape(name)}\\fR",
                    f"{roff_escape(_first_sentence(help_text))}. See \\fBirtk\\-{roff_escape(name)}\\fR(1)."]
        options = "\n".join(line for p in command.params for line in _option_lines(p)) + "\n"
        stem = f"irtk-{name}"
        pages[f"{stem}.1"] = _page(stem.upper(), stem, _first_sentence(help_text),
                                   _synopsis(f"irtk {name}", command), [("OPTIONS", options)],
                                   fragment(stem), help_text)
    top = "\n".join(listing) + "\n"
    pages["irtk.1"] = _page("IRTK", "irtk", _first_sentence(group.help or ""),
                            ".B irtk\n[\\fB\\-\\-version\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIINPUT\\fR]",
                            [("COMMANDS", top)], fragment("irtk"), group.help or "")
    return pages


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    folder = Path(args[0] if args else "man")
    pages = render_pages(folder / "src")
    stale = []
    for name, text in pages.items():
        path = folder / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.write_text(text, encoding="utf-8")
    known = {p.name for p in folder.glob("*.1")}
    orphans = sorted(known - set(pages))
    if check and (stale or orphans):
        print(f"stale man pages: {', '.join(stale + orphans)} (run: python -m irtk.cli.manpages {folder})",
              file=sys.stderr)
        return 1
    for orphan in orphans if not check else ():
        (folder / orphan).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
