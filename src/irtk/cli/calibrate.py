"""``irtk calibrate``: the simulated user's gate thresholds for an embedder, from C-DAGs."""

from __future__ import annotations

from typing import Annotated

import typer

from irtk.cli import options as opt
from irtk.config import default_of as D
from irtk.dialogue.calibrate import CalibrateConfig as C  # no torch: --help stays light


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        help="Calibrate the simulated user's gate (--tau-rel, --tau-rep, --tau-req) for an embedder "
             "on pairs derived from trajectories' C-DAGs (irtk expand output), split by seed; writes "
             "a thresholds JSON for 'irtk simulate --thresholds' and prints held-out balanced "
             "accuracy per check, for both gates and for the paper's thresholds, on stderr.",
    )(calibrate)


def calibrate(
    input: opt.Input = None,
    output: opt.Output = None,
    embedder: opt.Embedder = D(C, "embedder"),
    heldout: Annotated[float, opt.option(C, "heldout", "--heldout")] = D(C, "heldout"),
    seed: opt.Seed = D(C, "seed"),
    config: opt.Config = None,
    quiet: opt.Quiet = False,
    verbose: opt.Verbose = 0,
) -> None:
    """Write the calibrated thresholds as JSON to -o (atomically) or stdout."""
    import json
    import sys

    from irtk.cli import runtime
    from irtk.dialogue.calibrate import calibrate as run
    from irtk.dialogue.calibrate import summary_table
    from irtk.dialogue.simulate import SIMULATE_INPUT
    from irtk.io import RecordReader, make_provenance, write_report

    cfg = C(embedder=embedder, heldout=heldout, seed=seed)
    reader = RecordReader(input, record_type=SIMULATE_INPUT)
    rows = list(reader.rows())
    thresholds = run(rows, cfg, source=reader.name)
    data = {**thresholds.to_json(), "provenance": make_provenance("calibrate", source=reader.name,
                                                                  embedder=embedder, heldout=heldout, seed=seed)}
    if output is not None:
        write_report(output, data)
    else:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    if not runtime.state.quiet:
        runtime.console.print(summary_table(thresholds))
