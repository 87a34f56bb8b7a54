"""``irtk entropy-audit``: samples from the input layouts, tokens, the one-step check, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from irtk.entropy.audit import (
    Encoder,
    Sample,
    group_advantages,
    read_samples,
    run_audit,
    samples_from_row,
)
from irtk.entropy.config import AuditConfig
from irtk.errors import InputError
from tests.conftest import run_irtk
from tests.entropy.conftest import completion_rows


def test_group_advantages_are_grpo_normalised() -> None:
    adv = group_advantages([1.0, 3.0, 5.0, 10.0, 7.0], ["a", "a", "a", "b", "c"])
    std = np.std([1.0, 3.0, 5.0], ddof=1)
    assert adv[:3] == pytest.approx([-2 / (std + 1e-6), 0.0, 2 / (std + 1e-6)])
    assert adv[3:] == [0.0, 0.0]  # a group of one has no baseline


def test_rewards_with_group_by_give_advantages() -> None:
    rows = [{"prompt": "p", "completion": "c", "reward": r, "q": q} for r, q in ((1, "x"), (2, "x"), (4, "y"), (0, "y"))]
    samples = list(read_samples(rows, AuditConfig(group_by=("q",)), "in"))
    assert [round(s.advantage, 4) for s in samples] == [-0.7071, 0.7071, 0.7071, -0.7071]
    assert all(s.advantage is None for s in read_samples(rows, AuditConfig(), "in"))


def test_simulate_dialogue_rows_give_one_sample_per_asked_turn() -> None:
    from irtk.dialogue.policies import ModelPolicy
    from irtk.generation import SamplingParams

    row = {"id": "d1", "simple_query": "heat pumps?", "intents": ["i"],
           "turns": [{"turn": 1, "question": "Q1?", "answer": "A1", "verdict": "answered", "reward": 2.0},
                     {"turn": 2, "question": "Q2?", "answer": "A2", "verdict": "redundant", "reward": -1.0},
                     {"turn": 3, "question": "", "answer": "", "verdict": "stop", "reward": 0.0}]}
    samples = [s for s, _ in samples_from_row(row, 1, AuditConfig(), "in")]
    assert [(s.turn, s.completion, s.reward) for s in samples] == [(1, "Q1?", 2.0), (2, "Q2?", -1.0)]
    system = ModelPolicy(None, SamplingParams()).system
    assert samples[0].prompt[0] == {"role": "system", "content": system}
    assert samples[1].prompt[-2:] == [{"role": "assistant", "content": "Q1?"}, {"role": "user", "content": "A1"}]


def test_messages_rows_score_the_last_assistant_message() -> None:
    row = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "more"}, {"role": "assistant", "content": "sure"}]}
    (sample, _), = samples_from_row(row, 1, AuditConfig(), "in")
    assert sample.completion == "sure" and len(sample.prompt) == 3


def test_a_row_without_a_completion_names_row_and_field() -> None:
    with pytest.raises(InputError, match=r"in: row 2: field 'completion': no completion column"):
        list(samples_from_row({"prompt": "x"}, 2, AuditConfig(), "in"))


def test_chat_and_raw_tokens(smollm2_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_path)
    sample = Sample("a", 1, "What?", "An answer.")
    chat = Encoder(tok, "auto", 8192, "in", "completion").encode(sample)
    assert tok.decode(chat.prompt_ids).endswith("<|im_start|>assistant\n")
    assert chat.completion_ids[-1] == tok.eos_token_id  # the end of turn is scored, as TRL does
    assert tok.decode(chat.completion_ids[:-1]) == "An answer."
    raw = Encoder(tok, "raw", 8192, "in", "completion").encode(sample)
    assert tok.decode(raw.prompt_ids + raw.completion_ids) == "What?An answer."
    with pytest.raises(InputError, match="longer than the model's context of 5"):
        Encoder(tok, "raw", 5, "in", "completion").encode(Sample("a", 3, "What?", "A much longer answer here."))


def test_verify_step_tracks_the_first_order_law(peaked_llama: str) -> None:
    """One SGD step of the LM head: the head's exact first-order prediction must match the
    measured entropy change nearly perfectly, and the paper's per-token lr*A*D (its diagonal)
    must correlate positively. A wrong D, a wrong sign or a wrong shift breaks both."""
    rows = completion_rows(6)
    cfg = AuditConfig(model=peaked_llama, dtype="float32", verify_step=1e-3)
    result = run_audit(cfg, rows, "in", lambda _: None)
    verify = result.summary["verify_step"]
    first = verify["first_order"]
    assert first["n"] == result.summary["tokens"] > 50
    assert first["pearson"] > 0.99 and 0.9 < first["slope"] < 1.1
    assert verify["paper"]["pearson"] > 0.3
    assert verify["paper"]["sign_agreement"] > 0.6
    # A step 10x larger moves the measured entropy about 10x as much (first order).
    bigger = run_audit(AuditConfig(model=peaked_llama, dtype="float32", verify_step=1e-2), rows, "in",
                       lambda _: None).verify
    ratio = np.abs(bigger["measured"]).sum() / np.abs(result.verify["measured"]).sum()
    assert 7 < ratio < 13


def test_cli_writes_samples_tokens_summary_and_plots(peaked_llama: str, rows_file: Path, tmp_path: Path) -> None:
    plots = tmp_path / "plots"
    report = tmp_path / "report.json"
    proc = run_irtk("entropy-audit", str(rows_file), "--model", peaked_llama, "--per-token",
                    "--plots", str(plots), "--report", str(report))
    assert proc.returncode == 0, proc.stderr.decode()
    tokens = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    summary = json.loads(report.read_text())
    assert len(tokens) == summary["tokens"] and summary["samples"] == 6
    first = tokens[0]
    assert first["id"] == "r0" and first["position"] == 0 and first["advantage"] == 1.0
    assert first["predicted_dh"] == pytest.approx(first["advantage"] * first["d"])
    assert first["d"] == pytest.approx(first["expected_s"] - first["s"])
    assert set(summary["rules"]) == {"clipb", "clipv", "clip-cov", "top-entropy"}
    stderr = proc.stderr.decode()
    assert "mean entropy" in stderr and "Clip_B" in stderr
    for name in ("entropy_hist.png", "s_vs_d.png", "predicted_dh.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_inputs_fail_with_one_line(peaked_llama: str, tmp_path: Path) -> None:
    no_completion = tmp_path / "a.jsonl"
    no_completion.write_text('{"prompt": "x", "answer": "y"}\n')
    too_long = tmp_path / "b.jsonl"
    too_long.write_text(json.dumps({"prompt": "x", "completion": "word " * 400}) + "\n")
    out = tmp_path / "out.jsonl"
    cases = [
        ((str(no_completion), "--model", peaked_llama), "row 1: field 'completion': no completion column"),
        ((str(too_long), "--model", peaked_llama), "longer than the model's context of 256"),
        ((str(too_long), "--model", str(tmp_path / "missing-model")), "missing-model"),
    ]
    for args, message in cases:
        proc = run_irtk("entropy-audit", *args, "-o", str(out))
        lines = proc.stderr.decode().strip().splitlines()
        assert proc.returncode == 1, proc.stderr.decode()
        assert len(lines) == 1 and message in lines[0], lines
        assert not out.exists()


def test_cli_training_curves_only(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Run b names its clip fraction as the trainers do (entropy_control/clip_fraction).
    for run, clip in (("a", "clip_fraction"), ("b", "entropy_control/clip_fraction")):
        (tmp_path / run).mkdir()
        pq.write_table(pa.table({"step": [1, 2, 3], "entropy": [1.0, 0.8, 0.5], "reward": [0.1, 0.3, 0.4],
                                 clip: [0.0, 0.001, 0.002]}), tmp_path / run / "metrics.parquet")
    plots = tmp_path / "plots"
    report = tmp_path / "runs.json"
    proc = run_irtk("entropy-audit", "--metrics", str(tmp_path / "a" / "metrics.parquet"),
                    "--metrics", str(tmp_path / "b"), "--plots", str(plots), "--report", str(report))
    assert proc.returncode == 0, proc.stderr.decode()
    # stdout: the runs side by side as a Markdown table (first -> last (mean) per curve)
    lines = proc.stdout.decode().splitlines()
    assert lines[0] == ("| run | steps | entropy: first → last (mean) | reward: first → last (mean) | "
                        "clip_fraction: first → last (mean) |")
    assert lines[2] == "| a | 3 | 1 → 0.5 (0.7667) | 0.1 → 0.4 (0.2667) | 0 → 0.002 (0.001) |"
    assert lines[3].startswith("| b | 3 |") and len(lines) == 4
    runs = json.loads(report.read_text())["runs"]
    assert [r["run"] for r in runs] == ["a", "b"]
    assert runs[1]["curves"]["entropy_control/clip_fraction"]["values"] == [0.0, 0.001, 0.002]
    assert runs[1]["curves"]["entropy_control/clip_fraction"]["steps"] == [1, 2, 3]
    assert (plots / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    bad = run_irtk("entropy-audit", "--metrics", str(tmp_path / "a" / "metrics.parquet"), "--plots",
                   str(plots), "--curves", "entropy,kl")
    assert bad.returncode == 1 and "no file has a numeric column 'kl'" in bad.stderr.decode()


@pytest.mark.slow
def test_embedded_model_on_simulate_dialogues(tmp_path: Path) -> None:
    dialogue = {"id": "d1", "seed_id": "s", "simple_query": "How well do heat pumps work in cold climates?",
                "intents": ["I want field data."],
                "turns": [{"turn": 1, "question": "Which regions? Options: Nordic; Canada.", "answer": "Nordic.",
                           "verdict": "answered", "reward": 2.0},
                          {"turn": 2, "question": "Which evidence? Options: field data; lab tests.",
                           "answer": "Field data.", "verdict": "answered", "reward": 1.0}]}
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(dialogue) + "\n")
    proc = run_irtk("entropy-audit", str(path), "--group-by", "seed_id", "-q")
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [r["turn"] for r in rows] == [1, 2]
    assert rows[0]["advantage"] > 0 > rows[1]["advantage"]
    assert all(0 < r["mean_entropy"] < np.log(49152) for r in rows)
