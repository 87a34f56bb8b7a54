"""``irtk simulate``: clarification dialogues against simulated users, scored per turn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.dialogue.gate import DEFAULT_TAU_REL, DEFAULT_TAU_REP  # numpy only: --help stays light


def register(app: typer.Typer) -> None:
    app.command(
        "simulate",
        help="Play clarification dialogues on trajectories (irtk expand output) against simulated "
             "users: per-turn verdicts and rewards, intent precision/recall/F1, a summary query. "
             "Prints a metrics table with 95% bootstrap CIs on stderr.",
    )(simulate)


def simulate(
    input: opt.Input = None,
    output: opt.Output = None,
    format: opt.Format = None,
    policy: Annotated[str, typer.Option("--policy", help="Clarifier: model, oracle (the trajectory's "
                                        "own questions), random (random graph questions) or none.")] = "model",
    backend: opt.Backend = "hf",
    model: opt.Model = "smollm2-135m-instruct",
    base_url: opt.BaseUrl = None,
    dtype: opt.Dtype = "auto",
    user: Annotated[str, typer.Option("--user", help="Simulated user's answers: template "
                                      "(deterministic, from the matched intent) or llm.")] = "template",
    user_model: Annotated[Optional[str], typer.Option("--user-model", help="Model for --user llm "
                                                      "(default: --model).", show_default=False)] = None,
    summary: Annotated[str, typer.Option("--summary", help="Summary agent: llm or template.")] = "llm",
    summary_model: Annotated[Optional[str], typer.Option("--summary-model", help="Model for --summary "
                                                         "llm (default: --model).", show_default=False)] = None,
    embedder: Annotated[str, typer.Option("--embedder", help="Sentence embedder of the gate and the "
                                          "rewards: a registry name, path or hub id.")] = "minilm-l6",
    tau_rep: Annotated[float, typer.Option("--tau-rep", help="Redundant when the cosine to an earlier "
                                           "question exceeds this (calibrated for minilm-l6).")] = DEFAULT_TAU_REP,
    tau_rel: Annotated[float, typer.Option("--tau-rel", help="Irrelevant when the best cosine to the "
                                           "intents is below this (calibrated for minilm-l6).")] = DEFAULT_TAU_REL,
    max_turns: Annotated[int, typer.Option("--max-turns", min=1, help="Questions per dialogue at most.")] = 9,
    allow_stop: Annotated[bool, typer.Option("--allow-stop", help="Let the model policy answer STOP "
                                             "when it knows enough.")] = False,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0, help="Sampling temperature "
                                               "(0: greedy).")] = 0.7,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1, help="Tokens per agent turn.")] = 96,
    seed: opt.Seed = 0,
    batch_size: opt.BatchSize = 16,
    limit: Annotated[Optional[int], typer.Option("--limit", min=0, help="Simulate at most N dialogues.",
                                                 show_default=False)] = None,
    shard: opt.ShardOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="With -o: keep the dialogues already in the "
                                         "output (or left by a killed run) and skip their ids.")] = False,
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the aggregate metrics as "
                                                   "JSON here.", show_default=False)] = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Simulate one dialogue per trajectory and write DIALOGUE records (input columns pass through)."""
    import json

    from irtk.cli import runtime
    from irtk.dialogue import metrics
    from irtk.dialogue.simulate import SIMULATE_INPUT, SimulateConfig, output_schema, run_simulate
    from irtk.errors import UsageError
    from irtk.io import RecordReader, make_provenance
    from irtk.records import DIALOGUE
    from irtk.resumable import ResumableOutput

    if report is not None and not report.parent.exists():
        raise UsageError(f"--report {report}: folder {report.parent} does not exist")
    cfg = SimulateConfig(
        policy=policy, backend=backend, model=model, base_url=base_url, dtype=dtype, user=user, user_model=user_model,
        summary=summary, summary_model=summary_model, embedder=embedder, tau_rep=tau_rep, tau_rel=tau_rel,
        max_turns=max_turns, allow_stop=allow_stop, temperature=temperature, max_tokens=max_tokens,
        seed=seed, batch_size=batch_size, limit=limit,
    )
    cfg.check()
    shard_ = opt.shard_of(shard)
    reader = RecordReader(input, record_type=SIMULATE_INPUT, batch_size=batch_size, shard=shard_)
    provenance = make_provenance("simulate", source=reader.name, shard=str(shard_) if shard_ else None,
                                 **cfg.recorded())
    with ResumableOutput(output, fmt=format, resume=resume, record_type=DIALOGUE, schema=output_schema(),
                         provenance=provenance) as out:
        if out.done_ids:
            runtime.info(f"resuming: {len(out.done_ids)} dialogue(s) already in {output}")
        cfg.skip_ids = frozenset(out.done_ids)
        with runtime.progress(f"simulate ({policy})", total=reader.row_count) as advance:
            result = run_simulate(cfg, reader, out, prior_rows=out.prior_rows, progress=advance)
    if not runtime.state.quiet:
        title = (f"irtk simulate: policy {policy}, {result['dialogues']} dialogue(s), "
                 f"{result['seconds']:.1f} s")
        runtime.console.print(metrics.metrics_table(result["metrics"], title=title))
    if report is not None:
        tmp = report.with_name(f".{report.name}.tmp")
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        tmp.replace(report)
