"""``irtk simulate``: clarification dialogues against simulated users, scored per turn."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.dialogue.config import SimulateConfig as C  # no torch: --help stays light


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
    policy: Annotated[str, opt.option(C, "policy", "--policy")] = D(C, "policy"),
    backend: opt.Backend = D(C, "backend"),
    model: opt.Model = D(C, "model"),
    base_url: opt.BaseUrl = None,
    dtype: opt.Dtype = D(C, "dtype"),
    backend_arg: opt.BackendArg = None,
    user: Annotated[str, opt.option(C, "user", "--user")] = D(C, "user"),
    user_model: Annotated[Optional[str], opt.option(C, "user_model", "--user-model", show_default=False)] = None,
    summary: Annotated[str, opt.option(C, "summary", "--summary")] = D(C, "summary"),
    summary_model: Annotated[Optional[str], opt.option(C, "summary_model", "--summary-model",
                                                       show_default=False)] = None,
    embedder: opt.Embedder = D(C, "embedder"),
    gate: Annotated[str, opt.option(C, "gate", "--gate")] = D(C, "gate"),
    thresholds: Annotated[Optional[str], opt.option(C, "thresholds", "--thresholds", show_default=False)] = None,
    tau_rep: Annotated[Optional[float], opt.option(C, "tau_rep", "--tau-rep", show_default=False)] = None,
    tau_rel: Annotated[Optional[float], opt.option(C, "tau_rel", "--tau-rel", show_default=False)] = None,
    tau_req: Annotated[Optional[float], opt.option(C, "tau_req", "--tau-req", show_default=False)] = None,
    max_turns: Annotated[int, opt.option(C, "max_turns", "--max-turns", min=1)] = D(C, "max_turns"),
    allow_stop: Annotated[bool, opt.option(C, "allow_stop", "--allow-stop")] = D(C, "allow_stop"),
    temperature: Annotated[float, opt.option(C, "temperature", "--temperature", min=0.0)] = D(C, "temperature"),
    max_tokens: Annotated[int, opt.option(C, "max_tokens", "--max-tokens", min=1)] = D(C, "max_tokens"),
    seed: opt.Seed = D(C, "seed"),
    batch_size: Annotated[Optional[int], opt.option(C, "batch_size", "--batch-size", envvar="IRTK_BATCH_SIZE",
                                                    min=1, show_default=False)] = None,
    limit: Annotated[Optional[int], opt.option(C, "limit", "--limit", min=0, show_default=False)] = None,
    shard: opt.ShardOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="With -o: keep the dialogues already in the "
                                         "output (or left by a killed run) and skip their ids.")] = False,
    report: opt.Report = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Simulate one dialogue per trajectory and write DIALOGUE records (input columns pass through)."""

    from irtk.cli import runtime
    from irtk.dialogue import metrics
    from irtk.dialogue.simulate import SIMULATE_INPUT, output_schema, run_simulate
    from irtk.io import RecordReader, make_provenance
    from irtk.records import DIALOGUE
    from irtk.resumable import ResumableOutput

    opt.check_report(report)
    cfg = C(
        policy=policy, backend=backend, model=model, base_url=base_url, dtype=dtype,
        backend_args=opt.key_values(backend_arg, "--backend-arg"), user=user, user_model=user_model,
        summary=summary, summary_model=summary_model, embedder=embedder, gate=gate, thresholds=thresholds,
        tau_rep=tau_rep, tau_rel=tau_rel, tau_req=tau_req,
        max_turns=max_turns, allow_stop=allow_stop, temperature=temperature, max_tokens=max_tokens,
        seed=seed, batch_size=batch_size, limit=limit,
    )
    shard_ = opt.shard_of(shard)
    reader = RecordReader(input, record_type=SIMULATE_INPUT, shard=shard_)
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
    opt.write_report(report, result)
