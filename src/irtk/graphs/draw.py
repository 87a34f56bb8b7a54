"""Pictures of a C-DAG: Mermaid and Graphviz DOT text, SVG/PNG through Graphviz's ``dot``.

Questions are boxes, options small rounded nodes between a question and the questions the option
unlocks, so every option shows (also those that unlock nothing) and shared children are visible
as nodes with several incoming arrows. The root (simplified query) points at the start nodes.
Graphviz is optional: without ``dot`` on PATH the PNG is drawn in Python (networkx's layered
layout, matplotlib), so a reviewer can always look at a graph; SVG needs Graphviz.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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


def to_networkx(graph: Mapping) -> Any:
    """The drawing's graph: root, questions and options as nodes (``kind`` attribute), each with
    its ``layer`` (depth from the root) and a wrapped ``label``."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_node("root", kind="root", label="\n".join(_wrap(graph["root_node"], 36)))
    for nid, node in graph["nodes"].items():
        g.add_node(f"q:{nid}", kind="question", label="\n".join(_wrap(f"{nid}: {node['text']}", 30)))
    for sid in graph["start_node_ids"]:
        g.add_edge("root", f"q:{sid}")
    for nid, node in graph["nodes"].items():
        for j, option in enumerate(node["options"]):
            oid = f"o:{nid}#{j}"
            g.add_node(oid, kind="option", label="\n".join(_wrap(option["text"], 22)))
            g.add_edge(f"q:{nid}", oid)
            for target in option.get("next_node_id") or []:
                g.add_edge(oid, f"q:{target}")
    # A node sits one layer below its deepest parent, so every arrow points down.
    for n in nx.topological_sort(g):
        parents = [g.nodes[p]["layer"] for p in g.predecessors(n)]
        g.nodes[n]["layer"] = max(parents) + 1 if parents else 0
    # Within a layer, nodes keep breadth-first order from the root, so siblings sit together
    # under their parent and few arrows cross (the layout places nodes in insertion order).
    first_seen = {n: i for i, n in enumerate(["root", *(v for _, v in nx.bfs_edges(g, "root"))])}
    ordered = nx.DiGraph()
    ordered.add_nodes_from(sorted(g.nodes(data=True), key=lambda nd: (nd[1]["layer"], first_seen.get(nd[0], 0))))
    ordered.add_edges_from(g.edges)
    return ordered


def render_png(graph: Mapping, target: Path) -> Path:
    """Draw the graph as a PNG with networkx + matplotlib (no Graphviz needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    g = to_networkx(graph)
    layers: dict[int, list[str]] = {}
    for n, data in g.nodes(data=True):  # breadth-first order within each layer
        layers.setdefault(data["layer"], []).append(n)
    width = max(len(row) for row in layers.values())
    # Each layer centred, root on top (networkx's multipartite layout reorders within a layer).
    pos = {n: ((i - (len(row) - 1) / 2) * 2.4, -layer * 1.3)
           for layer, row in layers.items() for i, n in enumerate(row)}
    fig, ax = plt.subplots(figsize=(max(6.0, 2.4 * width), max(4.0, 1.35 * len(layers))))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=10, edge_color="#777777",
                           node_size=1800, min_source_margin=12, min_target_margin=12)
    style = {"root": ("#ffe9b3", 9, "round,pad=0.4"), "question": ("#dbe9ff", 8, "round,pad=0.35"),
             "option": ("#ffffff", 7, "round,pad=0.25")}
    for n, data in g.nodes(data=True):
        fill, size, box = style[data["kind"]]
        ax.text(*pos[n], data["label"], ha="center", va="center", fontsize=size,
                bbox={"boxstyle": box, "facecolor": fill, "edgecolor": "#5577aa",
                      "linestyle": "--" if data["kind"] == "option" else "-"})
    ax.set_axis_off()
    ax.margins(0.08)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def file_stem(name: str) -> str:
    """A file name for a graph id (seed ids may contain slashes, spaces, ...)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return stem or "graph"


def draw(graph: Mapping, folder: str | Path, name: str, images: tuple[str, ...] = IMAGE_FORMATS) -> list[Path]:
    """Write ``<name>.mmd`` and ``<name>.dot`` into ``folder``, plus images: through Graphviz
    when ``dot`` is installed, else the PNG drawn in Python (and no SVG)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = file_stem(name)
    mmd, dot = folder / f"{stem}.mmd", folder / f"{stem}.dot"
    mmd.write_text(to_mermaid(graph), encoding="utf-8")
    dot.write_text(to_dot(graph, name), encoding="utf-8")
    written = [mmd, dot]
    if images and dot_available():
        written += [render_dot(dot, fmt) for fmt in images]
    elif "png" in images:
        written.append(render_png(graph, folder / f"{stem}.png"))
    return written
