"""``irtk entropy-audit``: per-token entropy, discriminator and clip fractions of a model on given
completions; plots; a one-step check of the first-order entropy law."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from irtk.cli import options as opt
from irtk.config import default_of
from irtk.entropy.config import AuditConfig, EntropyControlConfig


def register(app: typer.Typer) -> None:
    app.command(
        "entropy-audit",
        help="Score completions under a model: per-token entropy H, log p, S_k, E_p[S] and the "
             "discriminator D_k (a GRPO step changes H by about lr*A*D), streamed over vocabulary "
             "tiles. Reads simulate dialogues, {prompt, completion} rows (TRL's layout) or "
             "{messages} rows, with optional advantage/reward columns. Writes one row per sample "
             "(or per token with --per-token); prints mean entropy and the fraction of tokens "
             "Clip_B, Clip_V, Clip-Cov and top-entropy would clip. --verify-step LR takes one real "
             "policy-gradient step and reports how well the prediction tracks the measured change. "
             "--metrics FILE --plots DIR draws training curves (alone when no INPUT is given, with a "
             "Markdown table of each run's first, last and mean values on stdout and --report as "
             "JSON; '-' audits stdin too).",
    )(entropy_audit)


A = AuditConfig
C = EntropyControlConfig


def entropy_audit(
    input: opt.Input = None,
    output: opt.Output = None,
    format: opt.Format = None,
    model: opt.Model = default_of(A, "model"),
    dtype: opt.Dtype = default_of(A, "dtype"),
    device: Annotated[Optional[str], opt.option(A, "device", "--device", show_default=False)] = None,
    template: Annotated[str, opt.option(A, "template", "--template")] = default_of(A, "template"),
    temperature: Annotated[float, opt.option(A, "temperature", "--temperature")] = default_of(A, "temperature"),
    prompt_field: Annotated[str, opt.option(A, "prompt_field", "--prompt-field")] = default_of(A, "prompt_field"),
    completion_field: Annotated[str, opt.option(A, "completion_field", "--completion-field")] =
        default_of(A, "completion_field"),
    group_by: Annotated[Optional[str], typer.Option(
        "--group-by", help="Comma-separated columns forming a GRPO group (e.g. seed_id,turn for "
        "simulate dialogues): with rewards, advantages = (r - group mean) / (group std + 1e-6).",
        show_default=False)] = None,
    per_token: Annotated[bool, opt.option(A, "per_token", "--per-token")] = False,
    batch_size: opt.BatchSize = default_of(A, "batch_size"),
    max_tokens_per_batch: Annotated[int, opt.option(A, "max_tokens_per_batch", "--max-tokens-per-batch", min=1)] =
        default_of(A, "max_tokens_per_batch"),
    tile_size: Annotated[int, opt.option(A, "tile_size", "--tile-size", min=1)] = default_of(A, "tile_size"),
    limit: Annotated[Optional[int], opt.option(A, "limit", "--limit", min=0, show_default=False)] = None,
    verify_step: Annotated[Optional[float], opt.option(A, "verify_step", "--verify-step", show_default=False)] = None,
    verify_params: Annotated[str, typer.Option(
        "--verify-params", help="What --verify-step updates: head (the LM head alone, untied from the "
        "input embedding: the setting of the first-order law, also reported with each token's "
        "kernel |h|^2) or all (every weight).")] = "head",
    clipb_mu: Annotated[float, opt.option(C, "clipb_mu", "--clipb-mu")] = default_of(C, "clipb_mu"),
    clipv_mu: Annotated[float, opt.option(C, "clipv_mu", "--clipv-mu")] = default_of(C, "clipv_mu"),
    clipv_max_frac: Annotated[float, opt.option(C, "clipv_max_frac", "--clipv-max-frac")] =
        default_of(C, "clipv_max_frac"),
    cov_ratio: Annotated[float, opt.option(C, "cov_ratio", "--cov-ratio")] = default_of(C, "cov_ratio"),
    clip_cov_lb: Annotated[float, opt.option(C, "clip_cov_lb", "--clip-cov-lb")] = default_of(C, "clip_cov_lb"),
    clip_cov_ub: Annotated[float, opt.option(C, "clip_cov_ub", "--clip-cov-ub")] = default_of(C, "clip_cov_ub"),
    top_entropy_quantile: Annotated[float, opt.option(C, "top_entropy_quantile", "--top-entropy-quantile")] =
        default_of(C, "top_entropy_quantile"),
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write PNG figures to this folder.",
                                                  show_default=False)] = None,
    metrics: Annotated[Optional[list[Path]], typer.Option(
        "--metrics", help="A training run's metrics.parquet (repeat for runs side by side): with "
        "--plots, draws entropy, reward and clip fraction against the step.", show_default=False)] = None,
    curves: Annotated[str, typer.Option("--curves", help="Comma-separated metrics columns for the "
                                        "training curves.")] = "entropy,reward,clip_fraction",
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the summary as JSON here.",
                                                   show_default=False)] = None,
    seed: opt.Seed = default_of(A, "seed"),
    shard: opt.ShardOpt = None,
    config: opt.Config = None,
    progress: opt.ProgressOpt = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Audit entropy of completions under a model (records in, per-sample/per-token rows out).
    --shard K/N audits slice K of the records; the summary then describes that slice."""
    import sys

    from irtk.cli import runtime
    from irtk.errors import UsageError

    for path, what in ((report, "--report"),):
        if path is not None and not path.parent.exists():
            raise UsageError(f"{what} {path}: folder {path.parent} does not exist")
    if metrics and plots is None:
        raise UsageError("--metrics draws training curves: give --plots DIR too")
    if verify_params not in ("head", "all"):
        raise UsageError(f"--verify-params must be head or all, got {verify_params!r}")
    curve_columns = [c.strip() for c in curves.split(",") if c.strip()]
    # Curves alone when no records are named; "-" audits stdin as well.
    curves_only = bool(metrics) and input is None
    if plots is not None and metrics:
        from irtk.entropy.plots import plot_training_curves

        path = plot_training_curves(metrics, plots, columns=curve_columns)
        runtime.info(f"training curves: {path}")
    if curves_only:
        from irtk.entropy.plots import curve_summary

        runs = curve_summary(metrics, columns=curve_columns)
        sys.stdout.write(runs_markdown(runs, curve_columns))
        opt.write_report(report, {"runs": runs})
        return

    control = EntropyControlConfig(clipb_mu=clipb_mu, clipv_mu=clipv_mu, clipv_max_frac=clipv_max_frac,
                                   cov_ratio=cov_ratio, clip_cov_lb=clip_cov_lb, clip_cov_ub=clip_cov_ub,
                                   top_entropy_quantile=top_entropy_quantile)
    cfg = AuditConfig(
        model=model, dtype=dtype, device=device, template=template, temperature=temperature,
        prompt_field=prompt_field, completion_field=completion_field,
        group_by=tuple(c.strip() for c in (group_by or "").split(",") if c.strip()),
        batch_size=batch_size, max_tokens_per_batch=max_tokens_per_batch, tile_size=tile_size,
        per_token=per_token, limit=limit, verify_step=verify_step, control=control, seed=seed,
    )
    from irtk.entropy.audit import load_scoring_model, output_schema, run_audit
    from irtk.io import RecordReader, RecordWriter, make_provenance

    part = opt.shard_of(shard)
    if part is not None and part.count > 1 and (cfg.group_by or verify_step is not None):
        # Round-robin slices split GRPO groups (their baselines) and the one policy-gradient step
        # over all samples, so a slice's rows would not be the whole run's rows.
        what = "--group-by" if cfg.group_by else "--verify-step"
        raise UsageError(f"{what} needs every record in one run, not shard {part} "
                         "(from --shard or SLURM_ARRAY_*): give --shard 0/1")
    reader = RecordReader(input, batch_size=batch_size, shard=part)
    scorer = load_scoring_model(cfg)
    provenance = make_provenance("entropy-audit", source=reader.name, verify_params=verify_params,
                                 shard=str(part) if part else None, **cfg.recorded())
    schema = output_schema(per_token, verify_step is not None)
    with RecordWriter(output, fmt=format, schema=schema, provenance=provenance) as writer, \
            runtime.progress("entropy-audit", total=None) as advance:
        result = run_audit(cfg, reader.rows(), reader.name, writer.write_rows, model=scorer,
                           warn=runtime.warn, progress=advance, verify_params=verify_params)
    summary = result.summary
    if not runtime.state.quiet:
        runtime.console.print(summary_table(summary, model))
    if plots is not None:
        _plots(result, plots, model)
        runtime.info(f"plots: {plots}")
    opt.write_report(report, summary)


def _plots(result: object, out: Path, model: str) -> None:
    from irtk.entropy.plots import plot_audit, plot_verify

    c = result.collected  # type: ignore[attr-defined]
    plot_audit(c.array("entropy"), c.array("s"), c.array("d"), c.array("advantage"), out, title=Path(model).name)
    verify = result.verify  # type: ignore[attr-defined]
    if verify is not None:
        plot_verify(verify["predicted"], verify["measured"], verify["advantage"], verify["paper"], out)
        if verify.get("first_order") is not None:
            plot_verify(verify["first_order_predicted"], verify["measured"], verify["advantage"],
                        verify["first_order"], out, name="verify_first_order.png",
                        xlabel="predicted dH, the head's exact first order (all token pairs)")


def runs_markdown(runs: list[dict], columns: list[str]) -> str:
    """Training runs side by side as a Markdown table: per run its steps, and per curve the
    value at the first and last logged step and the mean over steps ("-": not logged)."""
    from irtk.entropy.plots import match_columns

    head = ["run", "steps", *(f"{c}: first → last (mean)" for c in columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for run in runs:
        curves = run["curves"]
        steps = sorted({s for c in curves.values() for s in c["steps"]})
        cells = [run["run"], str(len(steps))]
        for spec in columns:
            found = match_columns(curves, spec)
            c = curves[found[0]] if found else None
            cells.append("-" if c is None else f"{c['first']:.4g} → {c['last']:.4g} ({c['mean']:.4g})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.3f}%"


def _num(x: float | None, fmt: str = ".4g") -> str:
    return "-" if x is None else format(x, fmt)


def summary_table(summary: dict, model: str) -> object:
    """The audit summary as a rich table for the stderr console."""
    from rich.table import Table

    table = Table(title=f"irtk entropy-audit: {model}, {summary['samples']} sample(s), "
                        f"{summary['tokens']} token(s), {summary['seconds']:.1f} s", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("mean entropy (nats)", _num(summary["mean_entropy"]))
    table.add_row("median / p90 entropy", f"{_num(summary['median_entropy'])} / {_num(summary['p90_entropy'])}")
    if summary.get("mean_reward") is not None:
        table.add_row("mean reward", _num(summary["mean_reward"]))
    rules, par = summary.get("rules", {}), summary["parameters"]
    if "clipb" in rules:
        r = rules["clipb"]
        table.add_row(f"Clip_B (mu {par['clipb_mu']}) clips",
                      f"{_pct(r['clip_fraction'])} ({_pct(r['clip_fraction_neg'])} of A<0)")
    if "clipv" in rules:
        r = rules["clipv"]
        table.add_row(f"Clip_V (mu {par['clipv_mu']}) flags / clips at max_frac {par['clipv_max_frac']}",
                      f"{_pct(r['flagged_fraction'])} / {_pct(r['clip_fraction'])}")
    if "clip-cov" in rules:
        r = rules["clip-cov"]
        table.add_row(f"Clip-Cov (r {par['cov_ratio']}, band {tuple(par['clip_cov_band'])}) in band / clips",
                      f"{_pct(r['cov_band_fraction'])} / {_pct(r['clip_fraction'])}")
    if "top-entropy" in rules:
        r = rules["top-entropy"]
        table.add_row(f"top-entropy (q {par['top_entropy_quantile']}) masks",
                      f"{_pct(r['clip_fraction'])} (H < {r['entropy_threshold']:.3g})")
    if "clipb" not in rules and rules:
        table.add_row("Clip_B / Clip_V / Clip-Cov", "need advantages (or rewards with --group-by)")
    pred = summary.get("predicted_dh_per_lr")
    if pred:
        table.add_row("predicted dH per unit lr, sum over A>0 / A<0 tokens",
                      f"{_num(pred['positive']['sum'])} / {_num(pred['negative']['sum'])}")
    verify = summary.get("verify_step")
    if verify:
        for key, label in (("paper", "lr*A*D"), ("kernel_scaled", "lr*|h|^2*A*D"),
                           ("first_order", "head's full first order")):
            v = verify.get(key)
            if v:
                table.add_row(f"verify ({verify['params']}, lr {verify['learning_rate']:g}): {label}",
                              f"r {_num(v['pearson'], '.3f')}, spearman {_num(v['spearman'], '.3f')}, "
                              f"slope {_num(v['slope'], '.3g')}, sign {_pct(v['sign_agreement'])}, n {v['n']}")
    return table
