"""Regenerate examples/corpus.jsonl: the Python standard library's own documentation.

Each document is one public function or class of a fixed list of standard-library modules:
``doc_id`` is its dotted name, ``text`` its name and the first paragraph of its docstring.
The committed file was made with Python 3.11; other versions word a few docstrings
differently. Queries and qrels (corpus-queries.jsonl, corpus.qrels) were written by hand.

    python examples/make_corpus.py > examples/corpus.jsonl
"""

from __future__ import annotations

import importlib
import inspect
import json
import sys

MODULES = ["math", "statistics", "random", "string", "textwrap", "os", "os.path", "shutil",
           "glob", "fnmatch", "json", "csv", "re", "itertools", "functools", "operator",
           "collections", "heapq", "bisect", "datetime", "calendar", "time", "zlib", "gzip",
           "hashlib", "base64", "secrets", "uuid", "urllib.parse", "difflib", "tempfile"]


def first_paragraph(doc: str) -> str:
    lines = []
    for line in inspect.cleandoc(doc).splitlines():
        if not line.strip():
            if lines:
                break
            continue
        lines.append(line.strip())
    return " ".join(lines)


def main() -> None:
    seen = set()
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in sorted(dir(module)):
            if attr.startswith("_"):
                continue
            obj = getattr(module, attr)
            if not (inspect.isroutine(obj) or inspect.isclass(obj)) or not obj.__doc__:
                continue
            text = first_paragraph(obj.__doc__)
            # Skip signature-only stubs and docstrings shared by aliases.
            if len(text) < 12 or text in seen:
                continue
            seen.add(text)
            sys.stdout.write(json.dumps({"doc_id": f"{name}.{attr}", "text": f"{name}.{attr}: {text}"}) + "\n")


if __name__ == "__main__":
    main()
