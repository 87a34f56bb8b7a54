"""Where models run: the device and dtype, chosen at run time (never a hard-coded ``.cuda()``).

Every model loader in irtk (generation backends, embedders, retrieval encoders, trainers, the
entropy audit) asks here, so one rule decides bf16 vs fp32 everywhere.
"""

from __future__ import annotations

import functools
from typing import Any

from irtk.errors import BackendError


def pick_device(device: str | None = None) -> str:
    """``device`` as given, else cuda, else mps, else cpu — chosen at run time, never hard-coded."""
    import torch

    if device and device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str, dtype: str | None = None) -> Any:
    """``dtype`` as given; else bf16 where the device runs it natively (recent GPUs, CPUs with
    AVX512-BF16 or AMX), fp16 on older GPUs, fp32 elsewhere (emulated bf16 is slower than fp32)."""
    import torch

    if dtype and dtype != "auto":
        value = getattr(torch, dtype, None)
        if not isinstance(value, torch.dtype):
            raise BackendError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
        return value
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run in hardware. On such a CPU (2 cores) the embedded
    SmolLM2 rendered 16 dialogues 1.7x faster in bf16 than in fp32 (``bench/expand.py --dtype``)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def device_kind(device: Any) -> str:
    """``device``'s kind without its index ("cuda:1" -> "cuda")."""
    return str(device).split(":")[0]


def release_freed_memory(device: Any) -> None:
    """On a CPU with glibc, hand memory freed since the last call back to the system
    (``malloc_trim``) once the process has grown by ``TRIM_AFTER_BYTES`` since then; elsewhere
    nothing. glibc keeps freed blocks for reuse, and once large tensors of changing sizes have
    come and gone (a decoding batch's key/value slabs, rebuilt wider as a stream runs, and the
    slabs of the rows pre-filled to join it) its heap holds them all: on 64 dialogues of
    ``simulate`` (``bench/simulate.py``) the peak RSS went from 3.1 to 2.6 GiB. The growth test
    keeps it rare (a trim costs ~10 ms, and memory handed back is paged in again when reused):
    on 32 dialogues, 128 trims took 1.4 s of a 100 s run, and runs with and without trimming
    took the same time within the machine's noise."""
    if device_kind(device) != "cpu":
        return
    trim = _libc("malloc_trim")
    if trim is None:
        return
    now = _rss_bytes()
    if now - _TRIMMED["rss"] >= TRIM_AFTER_BYTES:
        trim(0)
        _TRIMMED["rss"] = _rss_bytes()


def map_large_blocks(device: Any) -> None:
    """On a CPU with glibc, blocks of ``MMAP_THRESHOLD_BYTES`` or more get mappings of their own,
    returned to the system as soon as they are freed (``mallopt(M_MMAP_THRESHOLD)``), unless the
    user set ``MALLOC_MMAP_THRESHOLD_``; elsewhere nothing. Once per process. glibc raises its
    threshold to the size of every mapped block freed (up to 32 MiB), so after the first
    key/value slab of a decoding stream is freed, later slabs and the rows pre-filled to join
    come from the heap, where blocks of ever-changing sizes keep it large. Measured on 128
    dialogues of ``simulate`` (``bench/simulate.py``'s trajectories, one process each): peak RSS
    3.45 GiB with glibc's rule, 3.02 GiB with a 4 MiB threshold, in 386 and 373 s."""
    import os

    if device_kind(device) != "cpu" or _MAPPED["done"] or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    _MAPPED["done"] = True
    mallopt = _libc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def bound_kernel_caches() -> None:
    """Keep oneDNN's primitive cache and ideep's (torch's CPU kernels) to ``KERNEL_CACHE_ENTRIES``
    entries each, unless the user set ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` or
    ``LRU_CACHE_CAPACITY``. Both keep a compiled kernel, with its buffers, for every input shape
    they meet (1,024 of each by default), and a decoding stream meets new shapes all the time: rows
    come and go, pre-fills have any length. Both libraries read the variable once, at their first
    kernel: the CLI sets them as it starts, the ``hf`` backend before it loads its model (too late
    only where something in the process already ran one). Measured on 128 dialogues of
    ``simulate`` (``bench/simulate.py``'s trajectories, one process each): peak RSS 2.91 GiB with
    the default caches, 2.75 GiB with 16 entries; on 64, alternating, 208.8 and 200.3 s at 2.32
    and 2.31 GiB with the defaults, 197.6 and 182.4 s at 2.24 and 2.25 GiB with 16."""
    import os

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(KERNEL_CACHE_ENTRIES))


KERNEL_CACHE_ENTRIES = 16


MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
_MAPPED = {"done": False}
TRIM_AFTER_BYTES = 64 << 20
_TRIMMED = {"rss": 0}  # the process's RSS after the last trim


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:  # glibc implies Linux here
        return int(f.read().split()[1]) * _page_size()


@functools.cache
def _page_size() -> int:
    import os

    return os.sysconf("SC_PAGE_SIZE")


@functools.cache
def _libc(name: str) -> Any:
    """glibc's function ``name``, None where the C library has none (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
