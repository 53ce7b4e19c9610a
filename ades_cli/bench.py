"""``ades bench``: training-step, cue and PGD timings measured side by side in one process;
and on request one pgd-at training step in each execution format (eager, channels_last, compile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ades_cli.options import COMMA_LIST
from ades_cli.user_errors import one_line
from ades_core.errors import AdesError

STANDARD_ONLY = ("amp", "cue", "formats", "formats_only")
"""Options of the standard report that --paper-scale does not take."""

PAPER_ONLY = ("precisions", "epoch_images", "autoattack", "autoattack_iterations", "autoattack_queries")
"""Options of the --paper-scale report only."""


@click.command("bench")
@click.option("--paper-scale", is_flag=True,
              help="The paper's setting instead: WRN-34-10 (unless --backbone), batch 128, PGD-10 training of "
                   "pgd-at, trades and ades in bf16 and fp32 (images/s, seconds per epoch, FLOPs and fraction "
                   "of the GPU's peak, peak memory per row), PGD-20 and the official AutoAttack.")
@click.option("--backbone", default=None,
              help="Model to time [default: ades_cnn_small; ades_wrn34_10 with --paper-scale]")
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int, help="PGD steps of the training attack.")
@click.option("--eval-steps", default=20, show_default=True, type=int, help="PGD steps of the throughput test.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed rounds first.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Timed rounds (interleaved).")
@click.option("--defenses", default=None, type=COMMA_LIST,
              help="Training-step rows: DEFENSE or DEFENSE:OBJECTIVE (e.g. ades:lookahead) [default: pgd-at,ades,static-des; pgd-at,trades,ades with --paper-scale]")
@click.option("--cue", default="grad,entropy,mcdropout", type=COMMA_LIST, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "off", "bf16", "fp16"]))
@click.option("--formats", default=None, type=COMMA_LIST,
              help="Also time one pgd-at training step in these execution formats, side by side: "
                   "eager, channels_last, compile, compile+channels_last (default: none).")
@click.option("--formats-only", is_flag=True, help="Run only the --formats comparison.")
@click.option("--precisions", default=None, type=COMMA_LIST,
              help="--paper-scale: training precisions to time, of bf16, fp32 [default: bf16,fp32].")
@click.option("--epoch-images", default=None, type=click.IntRange(min=1),
              help="--paper-scale: training images per epoch, for seconds per epoch [default: 50000].")
@click.option("--autoattack/--no-autoattack", default=True,
              help="--paper-scale: time the official standard AutoAttack too [default: on].")
@click.option("--autoattack-iterations", default=None, type=click.IntRange(min=1),
              help="--paper-scale: APGD/FAB iterations (default: the authors' 100; fewer for quick checks only).")
@click.option("--autoattack-queries", default=None, type=click.IntRange(min=1),
              help="--paper-scale: Square's queries (default: the authors' 5000).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's own choice, or OMP_NUM_THREADS).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the figures as JSON here.")
@click.pass_context
def bench_command(
    ctx: click.Context, paper_scale: bool, backbone: str | None, batch_size: int, steps: int, eval_steps: int,
    warmup: int, repeats: int, defenses: tuple[str, ...] | None, cue: tuple[str, ...], device: str, amp: str,
    formats: tuple[str, ...] | None, formats_only: bool, precisions: tuple[str, ...] | None,
    epoch_images: int | None, autoattack: bool, autoattack_iterations: int | None, autoattack_queries: int | None,
    threads: int | None, out: Path | None,
) -> None:
    """Time ades against pgd-at (and others), the cues alone, and PGD against torchattacks.

    Minimum, median and mean of interleaved repeats; ratios use the medians (and the means:
    the figure for a step whose cost varies by design, as ades:lookahead's). With
    --formats, also one pgd-at training step per execution format (compile as
    `ades run --compile` does; its first, compiling call is timed apart).

    With --paper-scale, the paper's setting on this device instead (see
    docs/benchmarks.md): `ades bench --paper-scale --device cuda --out gpu.json`.
    """
    from ades_core.engine.runfolder.atomic_files import write_json

    given = {name for name in (*STANDARD_ONLY, *PAPER_ONLY)
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    wrong = sorted(given & set(STANDARD_ONLY if paper_scale else PAPER_ONLY))
    if wrong:
        option = "--" + wrong[0].replace("_", "-")
        raise click.UsageError(
            f"{option} applies only {'without' if paper_scale else 'with'} --paper-scale"
            + (" (it times bf16 and fp32 itself: --precisions)" if paper_scale and wrong[0] == "amp" else "")
        )
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    console = Console()
    try:
        if paper_scale:
            report = _paper_scale_report(
                backbone=backbone or "ades_wrn34_10", batch_size=batch_size, steps=steps, eval_steps=eval_steps,
                warmup=warmup, repeats=repeats, device=device, defenses=defenses, precisions=precisions,
                epoch_images=epoch_images, autoattack=autoattack, autoattack_iterations=autoattack_iterations,
                autoattack_queries=autoattack_queries,
                on_section=None if out is None else (lambda partial: write_json(out, partial)),
            )  # fmt: skip
        else:
            from ades_core.benchmark import BenchSettings, run_benchmarks

            settings = BenchSettings(
                backbone=backbone or "ades_cnn_small", batch_size=batch_size, steps=steps, eval_steps=eval_steps,
                warmup=warmup, repeats=repeats, device=device, amp=amp,
                defenses=tuple(defenses or ("pgd-at", "ades", "static-des")), cues=tuple(cue),
                formats=tuple(formats or ()), formats_only=formats_only,
            )
            report = run_benchmarks(settings)
    except AdesError as exc:
        raise one_line(exc) from None
    if paper_scale:
        _print_paper_scale(console, report)
    else:
        machine = report["machine"]
        console.print(
            f"{machine['device']} ({machine['device_name']}, {machine['threads']} threads, torch {machine['torch']}, "
            f"autocast {machine['autocast']}); {report['settings']['backbone']}, batch {batch_size}, "
            f"PGD-{steps} training, {repeats} repeats", highlight=False,
        )
        if "training_step" in report:
            _print_sections(console, report, eval_steps)
        if "formats" in report:
            _print_formats(console, report["formats"])
    if out is not None:
        write_json(out, report)  # strict JSON: a figure that is not measured is null
        console.print(f"wrote {out}", highlight=False)


def _paper_scale_report(*, defenses, precisions, epoch_images, on_section, **given) -> dict[str, Any]:
    """The --paper-scale report; with --out, the file is rewritten after each section (a run stopped
    by a time limit keeps what it measured, ``complete`` false)."""
    from ades_core.paper_scale import PaperScaleSettings, run_paper_scale

    optional = {"defenses": defenses, "precisions": precisions, "epoch_images": epoch_images}
    settings = PaperScaleSettings(**given, **{k: v for k, v in optional.items() if v is not None})
    return run_paper_scale(settings, on_section=on_section)


def _figure(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _print_paper_scale(console: Console, report: dict[str, Any]) -> None:
    machine, settings = report["machine"], report["settings"]
    console.print(
        f"{machine['device']} ({machine['device_name']}, torch {machine['torch']}); {settings['backbone']}, "
        f"batch {settings['batch_size']}, PGD-{settings['steps']} training, {settings['repeats']} repeats; "
        f"epoch = {settings['epoch_images']} images", highlight=False,
    )
    table = Table(title="training step", title_justify="left")
    memory = "peak MiB" if machine["device"].startswith("cuda") else "RSS +MiB"
    for column in ("precision", "defense", "img/s", "s/epoch", "x pgd-at", "TFLOP/s", "% peak", "floor s/ep", memory):
        table.add_column(column, justify="right")
    failures, peaks = [], {}
    for precision, rows in report["training_step"].items():
        for name, row in rows.items():
            if "failed" in row:
                table.add_row(precision, name, *["-"] * 6, "failed")
                failures.append(f"{precision} {name} failed: {row['failed']}")
                continue
            peaks[precision] = row["peak"]["name"]
            fraction = row["fraction_of_peak"]
            mib = row["peak_memory_mb"] if row["peak_memory_mb"] is not None else row.get("peak_rss_growth_mb")
            table.add_row(
                precision, name, f"{row['images_per_s']:.1f}", f"{row['s_per_epoch']:.1f}",
                _figure(row.get("ratio_to_pgd_at"), ".3f"), f"{row['achieved_tflops']:.2f}",
                _figure(None if fraction is None else 100 * fraction, ".1f"),
                _figure(row["floor_s_per_epoch"], ".1f"), _figure(mib, ".0f"),
            )
    console.print(table)
    for precision, name in peaks.items():
        console.print(f"{precision} peak: {name}", highlight=False)
    reference = report["reference"]
    console.print(f"reference: {reference['s_per_epoch']:g} s per epoch on {reference['device']}", highlight=False)
    pgd = report["pgd"]
    table = Table(title=f"{pgd['attack']} (as ades eval runs it)", title_justify="left")
    for column in ("precision", "median s", "img/s", "s per 10k", "% peak"):
        table.add_column(column, justify="right")
    for precision in settings["precisions"]:
        row = pgd[precision]
        if "failed" in row:
            table.add_row(precision, "-", "-", "-", "failed")
            failures.append(f"{pgd['attack']} {precision} failed: {row['failed']}")
            continue
        fraction = row["fraction_of_peak"]
        table.add_row(precision, f"{row['median']:.4f}", f"{row['images_per_s']:.1f}", f"{row['s_per_10k']:.1f}",
                      _figure(None if fraction is None else 100 * fraction, ".1f"))
    console.print(table)
    aa = report.get("autoattack")
    if aa is not None and "failed" in aa:
        failures.append(f"autoattack failed: {aa['failed']}")
    elif aa is not None:
        standard = "" if aa["settings"]["standard"] else " (not the standard settings)"
        console.print(
            f"AutoAttack{standard}: {aa['images_per_s']:.2f} img/s on this model ({aa['s_per_10k']:.0f} s per 10k; "
            f"{100 * aa['robust_fraction']:.0f}% left robust); a model with half its points surviving APGD-CE: "
            f"about {aa['projection']['s_per_10k']:.0f} s per 10k (projected)", highlight=False,
        )
    for line in failures:
        console.print(line, highlight=False, markup=False)


def _print_sections(console: Console, report: dict[str, Any], eval_steps: int) -> None:
    table = Table(title="training step (s)", title_justify="left")
    rows = report["training_step"]
    per_row_peak = all(row.get("peak_memory_mb") is not None for row in rows.values())
    for column in ("defense", "min", "median", "mean", "x pgd-at", "x (mean)",
                   "peak MiB" if per_row_peak else "peak RSS +MiB"):
        table.add_column(column, justify="right")
    for name, row in rows.items():
        ratio, mean_ratio = row.get("ratio_to_pgd_at"), row.get("mean_ratio_to_pgd_at")
        memory = row["peak_memory_mb"] if per_row_peak else row.get("peak_rss_growth_mb")
        table.add_row(name, f"{row['min']:.4f}", f"{row['median']:.4f}", f"{row['mean']:.4f}",
                      "" if ratio is None else f"{ratio:.3f}", "" if mean_ratio is None else f"{mean_ratio:.3f}",
                      "-" if memory is None else f"{memory:.0f}")
    console.print(table)
    if report.get("memory_note"):
        console.print(f"memory: {report['memory_note']}", highlight=False)
    cues = report["cue_extraction"]
    table = Table(title=f"cue extraction per batch (s): {','.join(cues['cues'])}", title_justify="left")
    for column in ("path", "min", "median"):
        table.add_column(column, justify="right")
    for name in ("naive", "shared"):
        table.add_row(name, f"{cues[name]['min']:.4f}", f"{cues[name]['median']:.4f}")
    console.print(table)
    pgd = report["pgd_throughput"]
    table = Table(title=f"PGD-{eval_steps} throughput (images/s)", title_justify="left")
    for column in ("implementation", "median s", "images/s"):
        table.add_column(column, justify="right")
    for name in ("ades", "torchattacks"):
        row = pgd[name]
        if "skipped" in row:
            table.add_row(name, "-", row["skipped"])
        else:
            table.add_row(name, f"{row['median']:.4f}", f"{row['images_per_s']:.1f}")
    console.print(table)
    if "ratio_ades_to_torchattacks" in pgd:
        console.print(f"ades / torchattacks throughput: {pgd['ratio_ades_to_torchattacks']:.3f}", highlight=False)


def _print_formats(console: Console, formats: dict[str, Any]) -> None:
    from ades_core.benchmark import FORMATS

    table = Table(title=f"{formats['defense']} training step (PGD-{formats['steps']}) by format (s)",
                  title_justify="left", show_edge=False)
    table.add_column("format", no_wrap=True, min_width=max(map(len, FORMATS)))
    for column in ("min", "median", "img/s", "x eager", "1st call", "compile"):
        table.add_column(column, justify="right", min_width=len(column) if column == "compile" else 6)
    failures = []
    for name, row in formats.items():
        if not isinstance(row, dict):
            continue
        if "failed" in row:
            table.add_row(name, "-", "-", "-", "-", "-", "failed")
            failures.append(f"{name} failed: {row['failed']}")
            continue
        ratio, compile_s = row.get("ratio_to_eager"), row.get("compile_s")
        table.add_row(
            name, f"{row['min']:.4f}", f"{row['median']:.4f}", f"{row['images_per_s']:.1f}",
            "" if ratio is None else f"{ratio:.3f}", f"{row['first_call_s']:.2f}",
            "" if compile_s is None else f"{compile_s:.2f}",
        )
    console.print(table)
    for line in failures:
        console.print(line, highlight=False, markup=False)
