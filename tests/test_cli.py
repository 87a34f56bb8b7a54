"""The CLI in real subprocesses: pipes, redirects, exit codes, one-line errors, options."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from tests.conftest import irtk_cmd, run_irtk


def shell(cmd: str, cwd, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a shell pipeline with irtk on PATH (as a user's shell would)."""
    bin_dir = os.path.dirname(irtk_cmd()[0])
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], cwd=cwd, capture_output=True,
                          env=full_env, timeout=300)


@pytest.fixture
def records(tmp_path):
    p = tmp_path / "r.jsonl"
    p.write_text("".join(json.dumps({"id": f"r{i}", "n": i, "deep": {"xs": [i, i + 1]}}) + "\n"
                         for i in range(50)))
    return p


def test_help_lists_commands_and_does_not_import_torch():
    code = ("import sys; from irtk.cli.main import run; rc = run(['--help']); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0
    assert "NO-TORCH" in r.stderr
    for command in ("show", "models"):
        assert f"  {command} " in r.stdout


def test_version():
    r = run_irtk("--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("irtk ")


def test_redirect_to_parquet_writes_real_parquet(records, tmp_path):
    r = shell(f"irtk show {records} > out.parquet", tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.parquet").read_bytes()[:4] == b"PAR1"
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 50 and table.column("deep").to_pylist()[3] == {"xs": [3, 4]}
    meta = json.loads(table.schema.metadata[b"irtk.provenance"])
    assert meta["stage"] == "show"
    # and back to JSONL through a pipe, with stdin sniffed as Parquet
    r = shell("cat out.parquet | irtk show --format jsonl > back.jsonl", tmp_path)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "back.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in records.read_text().splitlines()]


def test_head_one_exits_quietly_on_a_closed_pipe(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"id": i, "pad": "x" * 200}) + "\n" for i in range(200_000)))
    r = shell(f"irtk show {big} --format jsonl | head -1", tmp_path)
    assert r.stdout.decode().count("\n") == 1
    assert r.stderr == b"", r.stderr


def test_pretty_head_and_count(records):
    r = run_irtk("show", str(records), "--head", "2")
    assert r.returncode == 0
    assert r.stdout.decode().count('"id"') == 2
    assert run_irtk("show", str(records), "--count").stdout.strip() == b"50"
    r = run_irtk("show", str(records), "--schema")
    assert b"deep: struct<xs: list" in r.stdout


def test_parquet_to_a_terminal_is_refused(records):
    leader, follower = pty.openpty()
    proc = subprocess.run([*irtk_cmd(), "show", str(records), "--format", "parquet"], stdout=follower,
                          stderr=subprocess.PIPE, timeout=120)
    os.close(follower)
    os.close(leader)
    assert proc.returncode == 2
    assert b"refusing to write Parquet to a terminal" in proc.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"id": 1}\n{"id": \n', "line 2"),
        (b"", "empty input"),
        (b'{"id": "a"}\n\xff\xfe\n', "line 2: not valid UTF-8"),
        (b'"just a string"\n', "line 1: expected a JSON object"),
    ],
)
def test_bad_input_one_line_exit_1_no_output(tmp_path, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    out = tmp_path / "out.parquet"
    r = run_irtk("show", str(bad), "-o", str(out))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert expected in err and str(bad) in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
    # the same through a shell redirect: the shell's file stays (irtk did not create it), empty
    r = shell(f"irtk show {bad} > red.parquet", tmp_path)
    assert r.returncode == 1 and (tmp_path / "red.parquet").read_bytes() == b""
    # -v adds the traceback
    r = run_irtk("show", str(bad), "-o", str(out), "-v")
    assert r.returncode == 1 and b"Traceback" in r.stderr


def test_directory_and_truncated_parquet_inputs(tmp_path, records):
    r = run_irtk("show", str(tmp_path))
    assert r.returncode == 1 and b"is a directory" in r.stderr
    pq_path = tmp_path / "t.parquet"
    assert run_irtk("show", str(records), "-o", str(pq_path)).returncode == 0
    pq_path.write_bytes(pq_path.read_bytes()[:-30])
    r = run_irtk("show", str(pq_path), "--format", "jsonl")
    assert r.returncode == 1 and b"not a readable Parquet file" in r.stderr
    assert r.stderr.decode().count("\n") == 1


def test_usage_errors_exit_2(records):
    r = run_irtk("show", str(records), "--format", "csv")
    assert r.returncode == 2 and b"--format must be one of" in r.stderr
    r = run_irtk("show", "--no-such-option")
    assert r.returncode == 2


def test_config_file_and_environment_supply_defaults(tmp_path, records):
    cfg = tmp_path / "irtk.toml"
    cfg.write_text('format = "parquet"\n[show]\nhead = 3\n')
    out = tmp_path / "o.bin"
    r = run_irtk("show", str(records), "--config", str(cfg), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert pq.read_table(out).num_rows == 3
    # the command line beats the config file
    r = run_irtk("show", str(records), "--config", str(cfg), "--head", "5", "-o", str(out))
    assert pq.read_table(out).num_rows == 5
    # the environment beats the config file
    r = run_irtk("show", str(records), "--config", str(cfg), "-o", str(out), env={"IRTK_FORMAT": "jsonl"})
    assert out.read_bytes()[:1] == b"{"
    cfg.write_text("[show]\nheda = 3\n")
    r = run_irtk("show", str(records), "--config", str(cfg))
    assert r.returncode == 2 and b"unknown option(s): heda" in r.stderr


def test_models_lists_the_registry():
    r = run_irtk("models", "--json")
    assert r.returncode == 0
    names = {json.loads(line)["name"] for line in r.stdout.decode().splitlines()}
    assert {"smollm2-135m-instruct", "minilm-l6"} <= names


def _peak_rss_kb(cmd: list[str], stdin_path=None) -> int:
    code = ("import resource, subprocess, sys\n"
            "src = open(sys.argv[1], 'rb') if sys.argv[1] != '-' else None\n"
            "rc = subprocess.run(sys.argv[2:], stdin=src, stdout=subprocess.DEVNULL).returncode\n"
            "assert rc == 0, rc\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code, str(stdin_path or "-"), *cmd],
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.parametrize("via_stdin", [False, True], ids=["file", "stdin"])
def test_memory_stays_flat_as_input_grows(tmp_path, via_stdin):
    def make(n: int):
        p = tmp_path / f"in{n}.jsonl"
        with open(p, "w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"r{i}", "v": i * 0.5, "text": "lorem ipsum " * 8,
                                    "tags": ["a", "b"]}) + "\n")
        return p

    # ~7 MB vs ~70 MB of JSON: both past the reader's block size, so the ratio shows growth
    small, large = make(40_000), make(400_000)

    def peak(p):
        args = ["show", "--format", "parquet", "-o", str(tmp_path / "o.parquet")]
        if via_stdin:
            return _peak_rss_kb([*irtk_cmd(), *args], stdin_path=p)
        return _peak_rss_kb([*irtk_cmd(), *args[:0], "show", str(p), *args[1:]])

    large_kb = peak(large)
    assert pq.read_metadata(tmp_path / "o.parquet").num_rows == 400_000
    ratio = large_kb / peak(small)
    assert ratio < 1.5, f"peak RSS grew {ratio:.2f}x for 10x the input"


def test_shard_outputs_concatenate_back_to_the_whole(records, tmp_path):
    parts = []
    for k in range(3):
        part = tmp_path / f"part-{k}.parquet"
        r = run_irtk("show", str(records), "-o", str(part), "--format", "parquet", "--shard", f"{k}/3")
        assert r.returncode == 0, r.stderr
        parts.append(str(part))
    assert run_irtk("show", *parts, "--count").stdout.strip() == b"50"
    r = run_irtk("show", *parts, "-o", str(tmp_path / "all.parquet"))
    assert r.returncode == 0, r.stderr
    ids = sorted(pq.read_table(tmp_path / "all.parquet").column("id").to_pylist(), key=lambda s: int(s[1:]))
    assert ids == [f"r{i}" for i in range(50)]


def test_a_failing_run_keeps_the_file_stdout_and_stderr_share(tmp_path):
    """`irtk show bad > job.out 2>&1` (a Slurm job's --output): the error stays readable."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": \n')
    r = shell(f"irtk show {bad} > job.out 2>&1", tmp_path)
    assert r.returncode == 1
    text = (tmp_path / "job.out").read_text()
    assert "error:" in text and "line 1" in text


def test_a_failing_run_does_not_swallow_the_next_commands_output(tmp_path, records):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": \n')
    r = shell(f"{{ irtk show {bad}; irtk show {records} --format jsonl; }} > out.jsonl", tmp_path)
    assert r.returncode == 0  # the group's status is the last command's
    good = run_irtk("show", str(records), "--format", "jsonl").stdout
    assert (tmp_path / "out.jsonl").read_bytes() == good and good


def test_a_failing_run_keeps_what_was_in_the_file_before(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{"id": \n')
    out = tmp_path / "log.jsonl"
    out.write_text('{"id": "earlier"}\n')
    r = shell(f"irtk show {bad} --format jsonl >> log.jsonl", tmp_path)
    assert r.returncode == 1
    assert out.read_text() == '{"id": "earlier"}\n'


def test_quiet_and_verbose_do_not_leak_into_the_next_call_in_process(tmp_path, records, capsys):
    from irtk.cli import runtime
    from irtk.cli.main import run

    assert run(["show", str(records), "--count", "-q", "-v"]) == 0
    assert runtime.state.quiet and runtime.state.verbose
    assert run(["show", str(records), "--count"]) == 0
    assert not runtime.state.quiet and runtime.state.verbose == 0


def test_ctrl_c_exits_130_with_one_line():
    import signal
    import time

    # `irtk show` waits on stdin that never ends; SIGINT is what Ctrl-C sends.
    # SIGINT's default restored, as at a shell prompt: a test run started in the background
    # (`cmd &`) inherits it ignored, and Python then never raises KeyboardInterrupt.
    proc = subprocess.Popen([*irtk_cmd(), "show"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(3)  # let it start reading (a signal during start-up would hit the interpreter)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    proc.stdin.close()
    assert proc.returncode == 130
    assert err.decode().strip() == "error: interrupted"
