"""Research fixtures: a tiny random sentence encoder saved as a real checkpoint, an index of real
corpus documents built with it, requests, and a pseudo-terminal driver for the interactive mode."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, irtk_cmd

# Real documents of the shipped corpus: file operations and statistics.
MODULES = ("shutil.", "statistics.", "glob.", "tempfile.")

GRAPH = {
    "root_node": "How do I copy files?",
    "start_node_ids": ["q1", "q2"],
    "nodes": {
        "q1": {"id": "q1", "text": "What do you copy?", "options": [
            {"text": "Whole trees", "next_node_id": [],
             "intent": "I want the report to cover copying a whole directory tree."},
            {"text": "Single files", "next_node_id": [],
             "intent": "I want the report to cover copying the data of a single file."}]},
        "q2": {"id": "q2", "text": "Do you need temporary folders?", "options": [
            {"text": "Yes", "next_node_id": [],
             "intent": "I want the report to cover creating a temporary directory."},
            {"text": "No", "next_node_id": [],
             "intent": "I want the report to cover removing a directory tree."}]},
    },
}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def docs(tmp_path_factory) -> Path:
    rows = [json.loads(line) for line in (ROOT / "examples" / "corpus.jsonl").read_text().splitlines()]
    keep = [r for r in rows if r["doc_id"].startswith(MODULES)]
    return write_jsonl(tmp_path_factory.mktemp("docs") / "docs.jsonl", keep)


def _tiny_text_checkpoint(folder: Path) -> str:
    from irtk.retrieval.encoders import get_encoder

    get_encoder("text", "tiny", device="cpu").save(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory) -> str:
    """A 2-layer random BERT saved as a sentence-transformers folder: the index's encoder and the
    gate's embedder in these tests."""
    import torch

    torch.manual_seed(0)
    return _tiny_text_checkpoint(tmp_path_factory.mktemp("tiny-st"))


@pytest.fixture(scope="session")
def other_st(tmp_path_factory) -> str:
    import torch

    torch.manual_seed(1)
    return _tiny_text_checkpoint(tmp_path_factory.mktemp("other-st"))


@pytest.fixture(scope="session")
def index(tmp_path_factory, docs, tiny_st) -> str:
    from irtk.retrieval.encoders import get_encoder
    from irtk.retrieval.index import build_index

    folder = tmp_path_factory.mktemp("index") / "idx"
    build_index(docs, folder, get_encoder("text", tiny_st, device="cpu"), batch_size=32)
    return str(folder)


@pytest.fixture
def requests_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "requests.jsonl", [
        {"id": "copy", "query": "How do I copy files?", "graph": GRAPH},
        {"id": "stats", "query": "How do I summarise numbers?",
         "intents": ["I want the report to cover the median of data.",
                     "I want the report to cover the sample variance."]},
    ])


def env() -> dict:
    """The subprocess environment: test doubles importable as ``tests.research...``."""
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "TOKENIZERS_PARALLELISM": "false"}


class Pty:
    """``irtk ARGS`` on a real pseudo-terminal (its controlling terminal: Ctrl-C is a real SIGINT)."""

    def __init__(self, *args: str, cwd: Path | None = None) -> None:
        cmd = [*irtk_cmd(), *args]
        pid, fd = pty.fork()
        if pid == 0:  # the child: stdin, stdout and stderr are the terminal
            try:
                # As at a shell prompt: a test run started in the background (`cmd &`) inherits
                # SIGINT ignored, and Python then never raises KeyboardInterrupt on Ctrl-C.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                if cwd is not None:
                    os.chdir(cwd)
                os.execve(cmd[0], cmd, env())
            finally:
                os._exit(127)
        self.pid, self.fd, self.screen, self.status = pid, fd, "", None

    def read_until(self, text: str, timeout: float = 300) -> str:
        """Read the terminal until ``text`` appears (fails with the screen so far on timeout/exit)."""
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {text!r}; screen:\n{self.screen}")
            ready, _, _ = select.select([self.fd], [], [], min(left, 1.0))
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"terminal closed before {text!r}; screen:\n{self.screen}")
                self.screen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        return self.screen

    def send(self, data: str | bytes) -> None:
        os.write(self.fd, data.encode() if isinstance(data, str) else data)

    def wait(self, timeout: float = 300) -> int:
        """Exit code, draining the terminal meanwhile."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._drain(0.2)  # before reaping: the last words may be lost once the child is gone
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self._drain()
                self.status = os.waitstatus_to_exitcode(status)
                os.close(self.fd)
                return self.status
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"did not exit; screen:\n{self.screen}")

    def _drain(self, wait: float = 0.0) -> None:
        while True:
            ready, _, _ = select.select([self.fd], [], [], wait)
            if not ready:
                return
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.screen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
            wait = 0.0


assert sys.platform != "win32"  # pty is POSIX only


@pytest.fixture(scope="session")
def thresholds(tmp_path_factory) -> str:
    """Gate thresholds for the tiny embedder (no calibrated ones ship for a random model)."""
    path = tmp_path_factory.mktemp("thresholds") / "tiny.json"
    path.write_text(json.dumps({"tau_rel": 0.46, "tau_rep": 0.9, "tau_req": 0.95, "embedder": "tiny"}))
    return str(path)
