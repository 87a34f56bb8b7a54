"""Pictures of a C-DAG: Mermaid and Graphviz DOT text, SVG/PNG through Graphviz's ``dot``.

Questions are boxes, options small rounded nodes between a question and the questions the option
unlocks, so every option shows (also those that unlock nothing) and shared children are visible
as nodes with several incoming arrows. The root (simplified query) points at the start nodes.
Graphviz is optional: without ``dot`` on PATH only the text formats are written.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

from irtk.errors import IrtkError

IMAGE_FORMATS = ("svg", "png")


def _wrap(text: str, width: int = 32) -> list[str]:
    return textwrap.wrap(str(text), width) or [""]


def _mermaid_label(text: str) -> str:
    safe = str(text).replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
    return "<br/>".join(_wrap(safe))


def _mermaid_id(nid: str) -> str:
    # Mermaid ids must be plain words; a prefix keeps them clear of keywords like "end".
    return "n_" + re.sub(r"[^A-Za-z0-9_]", "_", nid)


def to_mermaid(graph: Mapping) -> str:
    """A Mermaid flowchart of the graph (renders on GitHub and in most Markdown viewers)."""
    lines = ["flowchart TD", f'    root(["{_mermaid_label(graph["root_node"])}"])']
    for nid, node in graph["nodes"].items():
        lines.append(f'    {_mermaid_id(nid)}["{nid}: {_mermaid_label(node["text"])}"]')
    for sid in graph["start_node_ids"]:
        lines.append(f"    root --> {_mermaid_id(sid)}")
    for nid, node in graph["nodes"].items():
        for j, option in enumerate(node["options"]):
            oid = f"{_mermaid_id(nid)}_o{j}"
            lines.append(f'    {oid}("{_mermaid_label(option["text"])}")')
            lines.append(f"    {_mermaid_id(nid)} --- {oid}")
            for target in option.get("next_node_id") or []:
                lines.append(f"    {oid} --> {_mermaid_id(target)}")
    lines.append("    classDef option fill:#eef,stroke:#99c,font-size:11px")
    option_ids = [f"{_mermaid_id(nid)}_o{j}" for nid, node in graph["nodes"].items()
                  for j in range(len(node["options"]))]
    if option_ids:
        lines.append(f"    class {','.join(option_ids)} option")
    return "\n".join(lines) + "\n"


def _dot_label(text: str) -> str:
    lines = [line.replace("\\", "\\\\").replace('"', '\\"') for line in _wrap(text)]
    return "\\n".join(lines)


def to_dot(graph: Mapping, name: str = "cdag") -> str:
    """A Graphviz DOT digraph of the graph."""
    q = _dot_label
    out = [f'digraph "{q(name)}" {{',
           "  rankdir=TB; node [fontname=Helvetica, fontsize=11]; edge [arrowsize=0.7];",
           f'  root [label="{q(graph["root_node"])}", shape=ellipse, style=filled, fillcolor="#ffe9b3"];']
    for nid, node in graph["nodes"].items():
        out.append(f'  "{q(nid)}" [label="{q(nid)}: {q(node["text"])}", shape=box, style="rounded,filled", '
                   f'fillcolor="#dbe9ff"];')
    for sid in graph["start_node_ids"]:
        out.append(f'  root -> "{q(sid)}";')
    for nid, node in graph["nodes"].items():
        for j, option in enumerate(node["options"]):
            oid = q(f"{nid}#o{j}")
            out.append(f'  "{oid}" [label="{q(option["text"])}", shape=box, style="rounded,dashed", '
                       f'fontsize=9, fontcolor="#333366"];')
            out.append(f'  "{q(nid)}" -> "{oid}" [arrowhead=none];')
            for target in option.get("next_node_id") or []:
                out.append(f'  "{oid}" -> "{q(target)}";')
    out.append("}")
    return "\n".join(out) + "\n"


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render_dot(dot_file: Path, fmt: str) -> Path:
    """Run Graphviz on a .dot file; returns the image path."""
    if fmt not in IMAGE_FORMATS:
        raise IrtkError(f"unknown image format {fmt!r} (expected one of {', '.join(IMAGE_FORMATS)})")
    exe = shutil.which("dot")
    if exe is None:
        raise IrtkError("Graphviz 'dot' is not installed (e.g. apt-get install graphviz)")
    target = dot_file.with_suffix(f".{fmt}")
    done = subprocess.run([exe, f"-T{fmt}", str(dot_file), "-o", str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise IrtkError(f"{dot_file}: dot failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    return target


def file_stem(name: str) -> str:
    """A file name for a graph id (seed ids may contain slashes, spaces, ...)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "graph"


def draw(graph: Mapping, folder: str | Path, name: str, images: tuple[str, ...] = IMAGE_FORMATS) -> list[Path]:
    """Write ``<name>.mmd`` and ``<name>.dot`` into ``folder``, plus images when dot is installed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = file_stem(name)
    mmd, dot = folder / f"{stem}.mmd", folder / f"{stem}.dot"
    mmd.write_text(to_mermaid(graph), encoding="utf-8")
    dot.write_text(to_dot(graph, name), encoding="utf-8")
    written = [mmd, dot]
    if images and dot_available():
        written += [render_dot(dot, fmt) for fmt in images]
    return written
