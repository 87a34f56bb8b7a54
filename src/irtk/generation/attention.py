"""Decode attention on a CPU: the ``hf`` backend's decode steps without torch's flash kernel.

A decode step attends one new token per row over the rows' key/value slab. torch's CPU
flash-attention kernel packs each block of keys and values before its small matrix products and
reads the left padding it then masks; at a decode step that costs 2-3x the time of reading the
cache once, and attention was half of each step of ``simulate`` (SmolLM2-135M, 32 rows of ~600
positions: 72 of 147 ms). ``decode_attention.cpp`` reads each row's valid positions once, keys in
one pass and values in the next, fp32 arithmetic, torch's softmax between (``bench/attention.py``
measures it against torch's kernel on the same slabs).

No library ships such a kernel for torch on a CPU (vLLM's CPU attention needs vLLM's own paged
cache and engine), so the file is built here: once per machine, by the C++ compiler (``CXX``, else
``c++``), with ``-march=native -fopenmp``, into the irtk cache (``IRTK_CACHE``), keyed by the
source, the compiler and the CPU's flags (a cache shared by the nodes of a cluster keeps one
build per kind of CPU); concurrent first uses each build and the last rename wins. Where it
cannot be built (no compiler or OpenMP, no AVX-512), ``library()`` is None, ``build_error()``
says why, and attention stays torch's.

``enable(lm)`` routes a model's attention through ``decode_attention`` (transformers'
``AttentionInterface``): steps feeding one token per row on a CPU, bf16 or fp32, head size 64,
1-8 query heads per key/value head, a boolean mask or none, no gradient, go to the kernel; every
other call (pre-fills, training) is torch's ``sdpa`` as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

NAME = "irtk_decode"
SOURCE = Path(__file__).with_name("decode_attention.cpp")
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
HEAD_DIM = 64  # the kernel's only head size (SmolLM2, Llama-3.2-1B, Qwen2.5-0.5B... use 64)
MAX_GROUP = 8  # query heads per key/value head it keeps in registers
_BUILD = {"error": None}


def build_error() -> str | None:
    """Why ``library()`` is None (None where it loaded or was not tried)."""
    return _BUILD["error"]


@functools.cache
def library() -> Any | None:
    """The kernel, built on first use (see the module doc); None where it cannot be."""
    from irtk.models import cache_dir

    _BUILD["error"] = None  # a reason from an earlier try (``library.cache_clear()``) is stale
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        _BUILD["error"] = "no C++ compiler (set CXX)"
        return None
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as e:
        _BUILD["error"] = f"{compiler}: {e}"
        return None
    source = SOURCE.read_bytes()
    key = hashlib.sha256(b"\0".join([source, version.encode(), " ".join(FLAGS).encode(), _cpu_flags()]))
    path = cache_dir() / "kernels" / f"decode_attention-{key.hexdigest()[:16]}.so"
    if not path.exists():
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            done = subprocess.run([compiler, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True,
                                  text=True, timeout=300)
            if done.returncode:
                lines = [line for line in done.stderr.splitlines() if "error" in line] or done.stderr.splitlines()
                _BUILD["error"] = f"{compiler} failed: {(lines or ['?'])[0].strip()}"
                return None
            os.replace(partial, path)
        except (OSError, subprocess.SubprocessError) as e:
            _BUILD["error"] = f"{compiler}: {e}"
            return None
        finally:
            with contextlib.suppress(OSError):  # gone (renamed), or its folder never made
                partial.unlink()
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as e:
        _BUILD["error"] = f"{path}: {e}"
        return None
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    for kind in ("bf16", "f32"):
        scores, mix = getattr(lib, f"irtk_scores_{kind}"), getattr(lib, f"irtk_mix_{kind}")
        scores.argtypes = [p] * 4 + [i64] * 9 + [ctypes.c_float, i32]
        mix.argtypes = [p] * 4 + [i64] * 9 + [i32]
        scores.restype = mix.restype = i32
    return lib


def _cpu_flags() -> bytes:
    """The CPU's feature flags (Linux), else its name: a ``-march=native`` build runs only there."""
    import platform

    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith(b"flags"):
                    return line
    except OSError:
        pass
    return platform.processor().encode()


def enable(lm: Any) -> bool:
    """Route ``lm``'s attention through ``decode_attention`` where ``lm`` runs on a CPU with torch's
    ``sdpa`` and the kernel builds; True if it now does."""
    if (getattr(lm.config, "_attn_implementation", None) != "sdpa" or lm.device.type != "cpu"
            or library() is None):
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # the masks sdpa gets: boolean, or none
    lm.set_attn_implementation(NAME)
    return True


def decode_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention signature: the kernel where it applies (see the module doc), else
    ``sdpa_attention_forward``. query [B, Hq, 1, D], key and value [B, Hkv, L, D], mask
    [B, 1, 1, L] boolean (True: attend) or None; returns [B, 1, Hq, D]."""
    import torch

    if not _applies(query, key, value, attention_mask, dropout, kwargs):
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    lib = library()
    kind = "bf16" if query.dtype == torch.bfloat16 else "f32"
    rows, heads, _, dim = query.shape
    kv_heads, width = key.shape[1], key.shape[2]
    q = query[:, :, 0]
    q = q if q.stride(-1) == 1 else q.contiguous()
    key, value = (t if t.stride(-1) == 1 and t.stride(-2) == dim else t.contiguous() for t in (key, value))
    mask = None if attention_mask is None else attention_mask[:, 0, 0, :]
    if mask is not None and mask.stride(-1) != 1:
        mask = mask.contiguous()
    # A mask of one row serves every row (stride 0).
    mask_ptr, mask_stride = (None, 0) if mask is None else (mask.data_ptr(), mask.stride(0) if mask.shape[0] > 1 else 0)
    threads = torch.get_num_threads()
    scores = torch.empty(rows, heads, width, dtype=torch.float32)
    failed = getattr(lib, f"irtk_scores_{kind}")(
        q.data_ptr(), key.data_ptr(), mask_ptr, scores.data_ptr(), rows, heads, kv_heads, width,
        q.stride(0), q.stride(1), key.stride(0), key.stride(1), mask_stride,
        dim ** -0.5 if scaling is None else scaling, threads)
    probs = torch.softmax(scores, dim=-1)
    out = torch.empty(rows, 1, heads, dim, dtype=query.dtype)
    failed |= getattr(lib, f"irtk_mix_{kind}")(
        probs.data_ptr(), value.data_ptr(), mask_ptr, out.data_ptr(), rows, heads, kv_heads, width,
        value.stride(0), value.stride(1), mask_stride, out.stride(0), out.stride(2), threads)
    if failed:  # ``_applies`` admits only what the kernel covers: this is a bug, not bad input
        raise RuntimeError(f"decode attention kernel refused {heads} query heads over {kv_heads}")
    return out, None


def _applies(query: Any, key: Any, value: Any, mask: Any, dropout: float, kwargs: dict) -> bool:
    import torch

    rows, heads, fed, dim = query.shape
    kv_heads = key.shape[1]
    return (fed == 1 and dim == HEAD_DIM and query.device.type == "cpu"
            and query.dtype in (torch.bfloat16, torch.float32) and key.dtype == value.dtype == query.dtype
            and heads % kv_heads == 0 and heads // kv_heads <= MAX_GROUP and key.shape[0] == rows
            and not dropout and not (torch.is_grad_enabled() and query.requires_grad)
            and not any(kwargs.get(k) is not None for k in ("softcap", "sliding_window", "position_bias", "s_aux"))
            and (mask is None or (mask.dtype == torch.bool and mask.dim() == 4 and mask.shape[2] == 1
                                  and mask.shape[-1] == key.shape[2] and mask.shape[0] in (1, rows)))
            and library() is not None)
