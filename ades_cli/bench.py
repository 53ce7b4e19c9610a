"""``ades bench``: training-step, cue and PGD timings measured side by side in one process."""

from __future__ import annotations

import json
from pathlib import Path

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
@click.option("--defenses", default="pgd-at,ades,static-des", type=COMMA_LIST, show_default=True)
@click.option("--cue", default="grad,entropy,mcdropout", type=COMMA_LIST, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "off", "bf16", "fp16"]))
@click.option("--out", "out", type=click.Path(path_type=Path), help="Write the figures as JSON here.")
def bench_command(
    backbone: str, batch_size: int, steps: int, eval_steps: int, warmup: int, repeats: int,
    defenses: tuple[str, ...], cue: tuple[str, ...], device: str, amp: str, out: Path | None,
) -> None:
    """Time ades against pgd-at (and others), the cues alone, and PGD against torchattacks.

    Minimum and median of interleaved repeats; ratios use the medians.
    """
    from ades_core.benchmark import BenchSettings, run_benchmarks

    try:
        settings = BenchSettings(
            backbone=backbone, batch_size=batch_size, steps=steps, eval_steps=eval_steps, warmup=warmup,
            repeats=repeats, device=device, amp=amp, defenses=tuple(defenses), cues=tuple(cue),
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
    table = Table(title="training step (s)", title_justify="left")
    for column in ("defense", "min", "median", "x pgd-at", "peak MiB"):
        table.add_column(column, justify="right")
    for name, row in report["training_step"].items():
        ratio = row.get("ratio_to_pgd_at")
        table.add_row(name, f"{row['min']:.4f}", f"{row['median']:.4f}",
                      "" if ratio is None else f"{ratio:.3f}", f"{row['peak_memory_mb']:.0f}")
    console.print(table)
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
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        console.print(f"wrote {out}", highlight=False)
