"""``irtk show --summary DIR``: a run folder's reports read back as the lines a person reads."""

from __future__ import annotations

from pathlib import Path

from irtk.dialogue.metrics import aggregate
from irtk.graphs.expand import ExpandStats
from irtk.io import make_provenance, write_report
from irtk.reports import stage_of, summary_lines
from irtk.retrieval.metrics import evaluate
from tests.conftest import run_irtk


def simulate_report(policy: str, precision: list[float], recall: list[float]) -> dict:
    """A report shaped as ``irtk simulate --report`` writes it, from per-dialogue figures."""
    rows = [{"precision": p, "recall": r, "seed": f"s{i}"} for i, (p, r) in enumerate(zip(precision, recall,
                                                                                         strict=True))]
    return {"stage": "simulate", "policy": policy, "dialogues": len(rows),
            "metrics": aggregate(rows, resamples=0),
            "config": {"policy": policy, "model": "smollm2-135m-instruct", "max_turns": 3}}


def full_run(folder: Path) -> None:
    # q1's relevant document at rank 1, q2's at rank 2: MRR 0.75, NDCG (1 + 1/log2 3) / 2 = 0.815.
    metrics = evaluate({"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d3": 2.0, "d4": 1.0}},
                       {"q1": {"d1": 1}, "q2": {"d4": 1}})
    write_report(folder / "corpus-metrics.json", {**metrics, "provenance": make_provenance("retrieve")})
    stats = ExpandStats(seeds=3, graphs_given=2, rejected=1, trajectories=5, turns=12, depths=[3, 4],
                        paths_per_graph=[2, 3])
    write_report(folder / "expand-stats.json", stats.summary())
    # Precision (1 + 0.5) / 2 = 75 %, recall 37.5 %, F1 of the means 2 * .75 * .375 / 1.125 = 50 %.
    write_report(folder / "metrics.json", simulate_report("model", [1.0, 0.5], [0.5, 0.25]))
    write_report(folder / "oracle-metrics.json", simulate_report("oracle", [1.0, 1.0], [1.0, 0.5]))
    (folder / "dialogs.parquet").write_bytes(b"x" * 2500)
    (folder / "graphs").mkdir()
    for name in ("a.png", "b.png"):
        (folder / "graphs" / name).write_bytes(b"png")


def test_every_report_gives_its_figures_and_the_files_are_listed(tmp_path):
    full_run(tmp_path)
    (tmp_path / "broken.json").write_text("{not json")
    lines = summary_lines(tmp_path)
    text = "\n".join(lines)
    assert lines[0] == f"Summary of {tmp_path}/ (4 reports)"
    [retrieve] = [x for x in lines if x.startswith("  irtk retrieve")]
    assert "2 judged queries: MRR@10 0.750, NDCG@10 0.815, Recall@5 1.000, Hit@1 0.500" in retrieve
    assert retrieve.endswith("[corpus-metrics.json]")
    [expand] = [x for x in lines if x.startswith("  irtk expand")]
    assert "3 seeds -> 2 graphs (2 given, 0 built, 1 failed) -> 5 trajectories, 12 turns" in expand
    model, oracle = [x for x in lines if x.startswith("  irtk simulate")]
    assert ("policy model (smollm2-135m-instruct), 2 dialogues, at most 3 questions: "
            "intent precision 75.0%, recall 37.5%, F1 50.0%  [metrics.json]") in model
    assert "policy oracle, 2 dialogues, at most 3 questions: intent precision 100.0%, recall 75.0%, F1 85.7%" in oracle
    assert "MISSING" not in text
    assert "broken.json: not readable as JSON" in text
    assert "  dialogs.parquet              2.5 kB" in lines and "  graphs/                      2 files" in lines


def test_a_missing_report_is_named_not_filled_in(tmp_path):
    write_report(tmp_path / "oracle-metrics.json", simulate_report("oracle", [1.0], [0.5]))
    proc = run_irtk("show", "--summary", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert f"Summary of {tmp_path}/ (1 report)" in out
    assert f"irtk retrieve  MISSING: no retrieve report in {tmp_path}/" in out
    assert f"irtk expand    MISSING: no expand report in {tmp_path}/" in out
    assert "policy oracle, 1 dialogue," in out and "irtk simulate  MISSING" not in out


def test_bad_folder_and_mixed_arguments_fail_with_one_line(tmp_path):
    proc = run_irtk("show", "--summary", str(tmp_path / "nope"))
    assert proc.returncode == 1 and proc.stderr.decode().strip().count("\n") == 0
    assert "no such folder" in proc.stderr.decode()
    proc = run_irtk("show", "x.jsonl", "--summary", str(tmp_path))
    assert proc.returncode == 2 and b"--summary DIR" in proc.stderr


def test_reports_are_recognised_by_content():
    assert stage_of({"stage": "simulate"}) == "simulate"
    assert stage_of({"MRR@10": 1, "NDCG@10": 1, "Recall@5": 1, "Hit@1": 1}) == "retrieve"
    assert stage_of({"stage": "research"}) is None and stage_of([1, 2]) is None
    assert stage_of({"tau_rel": 0.4, "provenance": {"stage": "calibrate"}}) is None


def test_results_page_includes_tables_reports_figures_and_names_the_missing(tmp_path):
    """``python -m irtk.reports page``: items in command-line order, an entropy audit's summary as
    a table of rule fractions, figures linked relative to the page, a missing file shown as missing."""
    from irtk.reports import main

    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "table.md").write_text("| policy | P |\n|---|---|\n| oracle | 100 |\n")
    write_report(tmp_path / "audit.json", {
        "samples": 4, "tokens": 40, "mean_entropy": 1.25, "median_entropy": 1.0, "p90_entropy": 2.5,
        "rules": {"clipb": {"clip_fraction": 0.05}, "clipv": {"clip_fraction": 0.0125}},
        "predicted_dh_per_lr": {"negative": {"tokens": 20, "sum": -0.5, "mean": -0.025}}})
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "curve.png").write_bytes(b"\x89PNG\r\n")
    page = tmp_path / "site" / "results.md"
    page.parent.mkdir()
    status = main(["page", str(page), "--title", "Study", "--note", "took 3 minutes",
                   "--table", f"Held-out={tmp_path}/t/table.md", "--figure", f"Curves={tmp_path}/plots/curve.png",
                   "--report", f"Audit={tmp_path}/audit.json", "--figure", f"Gone={tmp_path}/plots/none.png",
                   "--table", f"Research={tmp_path}/missing.md"])
    assert status == 0
    text = page.read_text()
    assert text.startswith("# Study\n\ntook 3 minutes\n")
    assert text.index("## Held-out") < text.index("![Curves]") < text.index("## Audit") < text.index("## Research")
    assert "| oracle | 100 |" in text and "![Curves](../plots/curve.png)" in text
    assert "| Clip_B | 5.00% |" in text and "| Clip_V | 1.25% |" in text and "| negative | 20 | -0.5 |" in text
    assert "mean 1.250" in text
    assert f"*MISSING: {tmp_path}/plots/none.png (the step did not run)*" in text
    assert f"*MISSING: {tmp_path}/missing.md (the step did not run)*" in text


def test_results_page_refuses_a_report_it_does_not_know(tmp_path, capsys):
    from irtk.reports import main

    write_report(tmp_path / "other.json", {"anything": 1})
    assert main(["page", str(tmp_path / "r.md"), "--title", "T", "--report", f"X={tmp_path}/other.json"]) == 1
    assert "other.json" in capsys.readouterr().err and not (tmp_path / "r.md").exists()
