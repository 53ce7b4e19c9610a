"""``ades bench``: training-step, cue and PGD timings measured side by side in one process,
and on request one pgd-at training step in each execution format (eager, channels_last, compile)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from ades_cli.options import COMMA_LIST


@click.command("bench")
@click.option("--backbone", default="ades_cnn_small", show_default=True, help="Model to time.")
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--steps", default=10, show_default=True, type=int, help="PGD steps of the training attack.")
@click.option("--eval-steps", default=20, show_default=True, type=int, help="PGD steps of the throughput test.")
@click.option("--warmup", default=1, show_default=True, type=int, help="Untimed rounds first.")
@click.option("--repeats", default=5, show_default=True, type=int, help="Timed rounds (interleaved).")
@click.option("--defenses", default="pgd-at,ades,static-des", type=COMMA_LIST, show_default=True,
              help="Training-step rows: DEFENSE or DEFENSE:OBJECTIVE (e.g. ades:lookahead, a scheduler objective).")
@click.option("--cue", default="grad,entropy,mcdropout", type=COMMA_LIST, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "off", "bf16", "fp16"]))
@click.option("--formats", default=None, type=COMMA_LIST,
              help="Also time one pgd-at training step in these execution formats, side by side: "
                   "eager, channels_last, compile, compile+channels_last (default: none).")
@click.option("--formats-only", is_flag=True, help="Run only the --formats comparison.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's own choice, or OMP_NUM_THREADS).")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the figures as JSON here.")
def bench_command(
    backbone: str, batch_size: int, steps: int, eval_steps: int, warmup: int, repeats: int,
    defenses: tuple[str, ...], cue: tuple[str, ...], device: str, amp: str, formats: tuple[str, ...] | None,
    formats_only: bool, threads: int | None, out: Path | None,
) -> None:
    """Time ades against pgd-at (and others), the cues alone, and PGD against torchattacks.

    Minimum, median and mean of interleaved repeats; ratios use the medians (and the means:
    the figure for a step whose cost varies by design, as ades:lookahead's). With
    --formats, also one pgd-at training step per execution format (compile as
    `ades run --compile` does; its first, compiling call is timed apart).
    """
    from ades_core.benchmark import BenchSettings, run_benchmarks
    from ades_core.engine.files import write_json

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        settings = BenchSettings(
            backbone=backbone, batch_size=batch_size, steps=steps, eval_steps=eval_steps, warmup=warmup,
            repeats=repeats, device=device, amp=amp, defenses=tuple(defenses), cues=tuple(cue),
            formats=tuple(formats or ()), formats_only=formats_only,
        )
        report = run_benchmarks(settings)
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(str(exc.args[0]) if exc.args else type(exc).__name__) from None
    console = Console()
    machine = report["machine"]
    console.print(
        f"{machine['device']} ({machine['device_name']}, {machine['threads']} threads, torch {machine['torch']}, "
        f"autocast {machine['autocast']}); {backbone}, batch {batch_size}, PGD-{steps} training, "
        f"{repeats} repeats", highlight=False,
    )
    if "training_step" in report:
        _print_sections(console, report, eval_steps)
    if "formats" in report:
        _print_formats(console, report["formats"])
    if out is not None:
        write_json(out, report)  # strict JSON: a figure that is not measured is null
        console.print(f"wrote {out}", highlight=False)


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
