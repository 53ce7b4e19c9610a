"""``ades run``: train one defense, or resume a run (the command and the config it builds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ades_cli.options import (
    COMMA_LIST,
    EPS,
    LAM,
    option_for_field,
    overrides_from_options,
)
from ades_cli.user_errors import one_line
from ades_core.errors import AdesError

PRESET_NAMES = ("paper", "quick", "fast-at", "free-at", "awp-at", "awp-trades", "mma")
"""The names of ``ades_core.presets.PRESETS`` (written out so ``ades --help`` imports no torch; a test keeps them equal)."""


def _fail(exc: AdesError) -> click.ClickException:
    """One ``Error: ...`` line; a config field's error names the option that sets it.

    Only user errors (:class:`~ades_core.errors.AdesError`) are caught and
    shown this way; anything else keeps its traceback.
    """
    from ades_core.config import ConfigError

    option = option_for_field(exc.field) if isinstance(exc, ConfigError) else None
    if option is not None:
        return click.ClickException(f"{option}: {exc.reason}".strip().splitlines()[0])
    return one_line(exc)


def _warn_plugin_failures() -> None:
    """Plugins that failed to load, as warnings on stderr; the command goes on without them."""
    import ades_core

    for failure in ades_core.PLUGIN_FAILURES:
        click.echo(f"warning: {failure}", err=True)


def _run_options(fn):
    """The options of ``ades run``; every one defaults to "not given" so presets apply."""
    options = [
        click.option("--preset", type=click.Choice(PRESET_NAMES), help="Start from a named setting or a defense's own recipe (fast-at, free-at, awp-at, awp-trades, mma; docs/defenses.md); --config and explicit options override it."),
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML or JSON file of config sections (as --print-config writes); over --preset, under explicit options."),
        click.option("--print-config", is_flag=True, help="Write the resolved config as TOML to stdout and exit (a file to start from with --config)."),
        click.option("--defense", help="Training method: ades, pgd-at, static-des, trades, mart, mma, free-at, fast-at, iaat, cat (see `ades list`)."),
        click.option("--cue", type=COMMA_LIST, help="Comma-separated cues, e.g. grad,entropy,mcdropout."),
        click.option("--backbone", help="ades_* or any timm model name, e.g. ades_wrn34_10, ades_cnn_small."),
        click.option("--drop-rate", type=float, help="Dropout rate passed to the backbone."),
        click.option("--dataset", help="cifar10, cifar100 or imagefolder."),
        click.option("--data-dir", type=click.Path(path_type=Path), help="Dataset root (imagefolder: holds train/ and test/)."),
        click.option("--download/--no-download", default=None, help="Download CIFAR through torchvision when missing."),
        click.option("--augment/--no-augment", default=None, help="Random crop (padding 4) and horizontal flip."),
        click.option("--image-size", type=int, help="Resize image-folder images to this square size."),
        click.option("--epochs", type=int, help="Training epochs."),
        click.option("--batch-size", type=int, help="Training batch size."),
        click.option("--lr", type=float, help="SGD learning rate (the peak of cosine, one-cycle and cyclic schedules)."),
        click.option("--lr-schedule", help="multistep (x0.1 at 75% and 90% of the epochs, per epoch), cosine, one-cycle or cyclic (per iteration)."),
        click.option("--lr-warmup", type=float, help="one-cycle, cyclic: the fraction of the iterations over which the rate rises (default 0.5)."),
        click.option("--momentum", type=float, help="SGD momentum."),
        click.option("--weight-decay", type=float, help="SGD weight decay."),
        click.option("--norm", type=click.Choice(["linf", "l2"]), help="Threat model of training and of the held-out check: linf (budgets in [0, 1] pixel scale, 8/255) or l2 (a Euclidean radius in pixel space, 0.5); default linf."),
        click.option("--eps", type=EPS, help="Fixed budget of pgd-at, e.g. 8/255 or 0.0314 (L-inf), 0.5 (L2)."),
        click.option("--eps-min", type=EPS, help="Smallest adaptive budget: eps_x = eps_min + lam * sigma(x)."),
        click.option("--lam", type=LAM, help="Range of the adaptive budget (lambda), e.g. 8/255."),
        click.option("--steps", type=int, help="PGD steps during training."),
        click.option("--alpha", type=EPS, help="PGD step size in the norm's units, e.g. 2/255 (default: 2/255 for linf, 2.5 * eps_i / steps per sample for l2)."),
        click.option("--attack-loss", help="Loss the training attack maximises: ce or cw."),
        click.option("--attack-bn", type=click.Choice(["eval", "train"]), help="BatchNorm mode while the training attack runs: eval (running statistics, TRADES/MART) or train (batch statistics, Madry/Rice/Wong); running statistics are never updated by attacks."),
        click.option("--loss", help="Outer training loss of pgd-at, static-des, ades: ce, trades or mart (per-sample budgets inside TRADES/MART)."),
        click.option("--beta", type=float, help="Weight of the TRADES/MART robustness term (default 6)."),
        click.option("--awp/--no-awp", "awp", default=None, help="Adversarial weight perturbation (pgd-at, trades, mart, ades)."),
        click.option("--awp-gamma", type=float, help="AWP's relative weight perturbation per layer (default 5e-3)."),
        click.option("--awp-warmup", type=int, help="Epochs trained before AWP starts (default 0)."),
        click.option("--fast-alpha-ratio", type=float, help="Fast-AT's FGSM step as a multiple of eps (default 1.25)."),
        click.option("--scheduler", help="Budget scheduler: fixed, static, mlp, random (default: the defense's own)."),
        click.option("--scheduler-objective", help="How the learnable scheduler is trained: target-quantile (default), target, lookahead, allocate-min, allocate-max, paper, penalty, loss-target, saturating."),
        click.option("--scheduler-lr", type=float, help="Adam learning rate of the learnable scheduler (default: the objective's own; 3e-2 for target, else 1e-3)."),
        click.option("--scheduler-hidden", type=int, help="Hidden width of the MLP scheduler."),
        click.option("--static-weights", help="Comma-separated weights of the static scheduler, one per cue."),
        click.option("--scheduler-init-std", type=float, help="Std of the MLP scheduler's output-layer weights at start (default 0.01; 0: every sigma starts at 0.5)."),
        click.option("--scheduler-grad-norm", type=click.Choice(["none", "rms"]), help="Divide the scheduler's per-sample eps gradient by its batch RMS (rms) or not (none, default)."),
        click.option("--scheduler-target-loss", type=float, help="Loss level rho of the loss-target and saturating objectives (default: the batch median)."),
        click.option("--scheduler-penalty", type=float, help="Weight mu of the penalty objective's pull of the mean budget to eps_min + lam/2 (default 100)."),
        click.option("--scheduler-random-std", type=float, help="Std of sigma drawn by the random control scheduler, up to 0.2887 (default: uniform over the whole range)."),
        click.option("--scheduler-reverse/--no-scheduler-reverse", "scheduler_reverse", default=None, help="Reversed control: train the learnable scheduler as usual, attack with each budget's deviation from the batch mean negated."),
        click.option("--scheduler-shuffle/--no-scheduler-shuffle", "scheduler_shuffle", default=None, help="Shuffled control: train the learnable scheduler as usual, attack with the batch's learned budgets in a random order."),
        click.option("--scheduler-lookahead-every", "scheduler_lookahead_every", type=int, default=None, help="lookahead objective: a look-ahead every this many steps [4]."),
        click.option("--scheduler-lookahead-lr", "scheduler_lookahead_lr", type=float, default=None, help="lookahead objective: learning rate of the virtual SGD step [0.1]."),
        click.option("--mc-samples", type=int, help="Stochastic passes T of the mcdropout cue."),
        click.option("--mc-mode", type=click.Choice(["auto", "modules", "head", "features"]), help="How mcdropout samples."),
        click.option("--cue-point", type=click.Choice(["start", "clean"]), help="Cues at PGD's start point, sharing its first gradient (start), or at the clean input as the paper (clean)."),
        click.option("--mc-dropout-p", type=float, help="Feature-dropout rate of mcdropout in 'features' mode."),
        click.option("--replays", type=int, help="free-at: replays m of each minibatch (default 8); the run makes ceil(epochs / m) passes."),
        click.option("--mma-max-eps", type=EPS, help="mma: d_max of the hinge, margins >= it add no loss (default 32/255 for linf, 2.0 for l2)."),
        click.option("--mma-min-eps", type=EPS, help="mma: smallest radius a margin search starts from (default 0.005)."),
        click.option("--mma-clean-weight", type=float, help="mma: weight of the clean cross-entropy (default 1/3; 0 is OMMA)."),
        click.option("--mma-search-steps", type=int, help="mma: bisection steps of the margin search (default 10)."),
        click.option("--mma-margin", type=click.Choice(["hard", "soft"]), help="mma: the bisection's flipped test, the logit margin (hard, default) or the log-sum-exp margin of the authors' code (soft)."),
        click.option("--iaat-warmup", type=int, help="iaat: epochs at the fixed --eps before per-sample budgets adapt (default 10)."),
        click.option("--iaat-gamma", type=EPS, help="iaat: step of the per-sample budget per visit (default 1.9/255 for linf, eps * 1.9/8 for l2)."),
        click.option("--iaat-beta", type=float, help="iaat: weight of the new budget in the running average (default 0.1)."),
        click.option("--iaat-max-eps", type=EPS, help="iaat: upper bound of the per-sample budgets (default 1 for linf: none; 8 * eps for l2)."),
        click.option("--cat-ramp", type=float, help="cat: fraction of the epochs over which eps rises to --eps (default 0.5)."),
        click.option("--cat-steps/--no-cat-steps", "cat_steps", default=None, help="cat: also raise the PGD steps from 1 to --steps."),
        click.option("--eval-eps", type=EPS, help="Budget of the per-epoch held-out PGD check (in --norm; default 8/255, so give it with --norm l2, e.g. 0.5)."),
        click.option("--eval-steps", type=int, help="Steps of the per-epoch held-out PGD check."),
        click.option("--eval-every", type=int, help="Evaluate every N epochs (and always after the last)."),
        click.option("--eval-batch-size", type=int, help="Batch size of the held-out check."),
        click.option("--val-split", type=int, help="Hold out N training images (fixed by --seed, never augmented); their clean and PGD accuracy every --eval-every epochs choose model-best.safetensors."),
        click.option("--early-stop-drop", type=float, help="Stop when the validation PGD accuracy falls more than this fraction below its best (0.2: catastrophic overfitting); needs --val-split."),
        click.option("--ema", type=float, help="Keep an exponential moving average of the weights with this decay, e.g. 0.999 (model-ema.safetensors)."),
        click.option("--ema-warmup/--no-ema-warmup", "ema_warmup", default=None, help="EMA decay min(decay, (1+t)/(10+t)) at update t (default on)."),
        click.option("--ema-buffers", type=click.Choice(["average", "copy"]), help="EMA of BatchNorm running statistics: averaged like the weights (default) or copied."),
        click.option("--tensorboard/--no-tensorboard", "tensorboard", default=None, help="Also write TensorBoard events to RUN/tensorboard (pip install 'ades[tensorboard]')."),
        click.option("--train-subset", type=int, help="Train on this many random training images."),
        click.option("--test-subset", type=int, help="Evaluate on this many random test images."),
        click.option("--seed", type=int, help="Seed of every random choice."),
        click.option("--device", help="auto, cpu, cuda or cuda:N."),
        click.option("--amp", type=click.Choice(["auto", "off", "bf16", "fp16"]), help="Mixed precision (auto: bf16 on CUDA, off on CPU)."),
        click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the model's forward passes."),
        click.option("--sync-bn/--no-sync-bn", "sync_bn", default=None, help="Under torchrun: BatchNorm statistics over the global batch (SyncBatchNorm)."),
        click.option("--log-every", type=int, help="Refresh the progress line every N steps."),
        click.option("--checkpoint-every", type=click.IntRange(min=1), help="Also save the resumable training state every N steps (it is always saved after each epoch)."),
        click.option("--on-nonfinite", type=click.Choice(["stop", "skip"]), help="A NaN/Inf loss or gradient stops the run (default) or its step is skipped."),
        click.option("--out", type=click.Path(path_type=Path), help="Run folder (default runs/<defense>-<backbone>-seed<seed>)."),
        click.option("--overwrite", is_flag=True, help="Replace a run already in --out."),
        click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this folder from its last saved state (its config.json fixes the setting)."),
        click.option("--quiet", is_flag=True, help="No progress bar or epoch lines."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def config_from_options(preset: str | None, options: dict[str, Any], config_file: Path | None = None):
    """Defaults <- preset <- config file <- explicit options, validated into a RunConfig."""
    from ades_cli.config_file import read_config_file
    from ades_core import RunConfig
    from ades_core.presets import PRESETS, merge

    raw = PRESETS[preset] if preset else {}
    if config_file is not None:
        raw = merge(raw, read_config_file(config_file))
    raw = merge(raw, overrides_from_options(options))
    return RunConfig.from_dict(raw)


def _print_config(config: Any, preset: str | None, config_file: Path | None) -> None:
    from ades_cli.config_file import to_toml

    made_from = ", ".join(
        part for part in (f"--preset {preset}" if preset else "", f"--config {config_file}" if config_file else "") if part
    )
    header = f"ades run config{f' (from {made_from} and the options given)' if made_from else ''}; start from it with --config FILE"
    click.echo(to_toml(config.to_dict(), header=header), nl=False)


def _say_recipe(preset: str | None, console: Console) -> None:
    """The recipe a defense's preset follows, and what still differs, before the run starts."""
    from ades_core.recipes import recipe_for_preset

    recipe = recipe_for_preset(preset)
    if recipe is None:
        return
    console.print(recipe.describe(), highlight=False, soft_wrap=True)
    for deviation in recipe.deviations:
        console.print(f"  differs: {deviation}", highlight=False, soft_wrap=True)


def _resumed_config(resume: Path, preset: str | None, out: Path | None, overwrite: bool, options: dict[str, Any]):
    """The config of the run in ``resume`` with the explicitly given (resumable) options applied."""
    from ades_core.engine.run_folder import (
        RESUMABLE_FIELDS,
        ResumeConflictError,
        resume_config,
    )

    if overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other: resume continues a run, overwrite replaces it")
    if preset is not None:
        raise click.UsageError("--preset cannot be combined with --resume: the run's config.json fixes its setting")
    if out is not None and Path(out).resolve() != Path(resume).resolve():
        raise click.UsageError(f"--out {out} differs from --resume {resume}; a resumed run stays in its folder")
    try:
        return resume_config(Path(resume), overrides_from_options(options))
    except ResumeConflictError as exc:
        option = option_for_field(exc.field) or exc.field
        may_change = ", ".join(option_for_field(f) or f for f in RESUMABLE_FIELDS)
        raise click.ClickException(
            f"{option} {exc.given!r} conflicts with {exc.stored!r} in {exc.config_file}, the run being "
            f"resumed; on --resume only {may_change} may change"
        ) from None


@click.command("run")
@_run_options
def run(
    preset: str | None,
    config_file: Path | None,
    print_config: bool,
    out: Path | None,
    overwrite: bool,
    resume: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a model with adversarial training and write its run folder.

    The training state is saved after every epoch (and every --checkpoint-every
    steps); `ades run --resume DIR` continues an interrupted run. On --resume
    only --device, --data-dir, --download, --log-every, --checkpoint-every and
    --on-nonfinite may differ from the run's config.json.

    \b
    `--config FILE` (TOML or JSON) sets any config field; `--print-config`
    writes the resolved config to start from. Outside a terminal (a batch
    job's log) each epoch is one plain line.

    \b
    Example (CPU, minutes):
      ades run --preset quick --defense ades --cue grad,entropy,mcdropout \\
               --dataset imagefolder --data-dir ~/.cache/ades/cifar10-imagefolder

    \b
    On several GPUs (--batch-size is the global batch; see docs/distributed.md):
      torchrun --nproc-per-node 8 -m ades_cli run --preset paper ...
    """
    from ades_core.distributed import init_from_env, launched_by_torchrun, shutdown
    from ades_core.engine.run_folder import check_new_run

    if resume is not None and launched_by_torchrun():
        raise click.UsageError(
            "--resume is not supported under torchrun; resume in one process (ades run --resume DIR) or start again"
        )
    _warn_plugin_failures()
    if resume is not None and (config_file is not None or print_config):
        raise click.UsageError("--config and --print-config cannot be combined with --resume: the run's config.json fixes its setting")
    try:
        if print_config:
            _print_config(config_from_options(preset, options, config_file), preset, config_file)
            return
        if resume is not None:
            config = _resumed_config(resume, preset, out, overwrite, options)
            out = Path(resume)
        else:
            config = config_from_options(preset, options, config_file)
            out = out or Path("runs") / f"{config.defense}-{config.model.backbone}-seed{config.seed}"
        if config.logging.tensorboard:
            from ades_core.engine.tensorboard import check_available

            check_available()  # before anything is built or written
        dist = init_from_env(config.device)
        main_rank = dist is None or dist.is_main
        if resume is None and main_rank:
            check_new_run(out, config, overwrite=overwrite)  # reads only: refused before anything is built
    except AdesError as exc:
        raise _fail(exc) from None
    _say_recipe(preset, Console(stderr=True, quiet=quiet or not main_rank))
    try:
        _train(config, out, overwrite=overwrite, resume=resume, quiet=quiet or not main_rank, main_rank=main_rank)
    finally:
        shutdown()


def _train(config: Any, out: Path, *, overwrite: bool, resume: Path | None, quiet: bool, main_rank: bool) -> None:
    """Build and train ``config`` into ``out`` (on every rank under torchrun; rank 0 prints)."""
    import ades_core
    from ades_core.config import format_eps
    from ades_core.engine.trainer import Trainer

    console = Console(stderr=True, quiet=quiet)
    from ades_core.registries import DEFENSES

    budget, meta, norm = config.budget, DEFENSES.entry(config.defense).meta, config.norm
    if meta.get("budget_note"):
        budget_text = meta["budget_note"]
    elif meta.get("uses_cues", True):
        budget_text = (
            f"eps in [{format_eps(budget.eps_min, norm)}, {format_eps(budget.eps_max, norm)}] (eps_min + lam*sigma)"
        )
    else:
        budget_text = f"eps {format_eps(budget.eps, norm)}"
    alpha = config.attack.alpha
    alpha_text = "2.5*eps/steps" if alpha is None else format_eps(alpha, norm)
    console.print(
        f"[bold]ades run[/bold] {config.defense} on {config.data.dataset} with {config.model.backbone}, "
        f"norm {norm}, {budget_text}, PGD-{config.attack.steps} alpha {alpha_text}, "
        f"{config.optim.epochs} epochs -> {out}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        setup = ades_core.build(config)
        trainer = Trainer(setup, console=console, progress=not quiet, overwrite=overwrite, resume=resume is not None)
        history = trainer.fit(out)
    except AdesError as exc:  # NonFiniteError too: the run stopped on a NaN/Inf, in one line
        raise _fail(exc) from None
    last = history[-1]
    if not main_rank:
        return
    click.echo(
        f"done: {out}  test clean {100 * last['test_clean_acc']:.2f}%  "
        f"{config.norm} PGD-{last['test_pgd_steps']}@{format_eps(last['test_eps'], config.norm)} "
        f"{100 * last['test_pgd_acc']:.2f}%  "
        f"(n={last['test_n']}, {last['train_seconds']:.1f} s/epoch)"
    )


