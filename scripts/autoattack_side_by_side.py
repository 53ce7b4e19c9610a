"""The official AutoAttack and torchattacks' re-implementation on the same model and images, per sample.

Run each implementation (side by side in two processes, one torch thread each),
then merge:

    python scripts/autoattack_side_by_side.py run RUN_DIR --attack autoattack --n 500 --out docs/results/aa
    python scripts/autoattack_side_by_side.py run RUN_DIR --attack autoattack-torchattacks --n 500 --out docs/results/aa
    python scripts/autoattack_side_by_side.py merge docs/results/aa

``run`` evaluates one attack with ``ades_core.evaluation.evaluate`` (same test
images from --seed/--order, same per-batch seeds, the model re-checks every
returned image) and writes ``<out>/<attack>.json``: its row, and the
per-sample flags of the clean pass and of the attack in evaluation order.
``merge`` writes ``<out>/side-by-side.json`` and prints a Markdown table:
robust accuracy of each, the samples both break, both leave, and where they
disagree (and which one is right there: a sample one attack breaks is not
robust, whichever missed it), seconds and seconds per attacked image.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ades_core import load_model
from ades_core.evaluation import describe_run, evaluate, load_test_data, resolve_attacks


def _bits(flags: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in flags.tolist())


def _portable(path: str | Path) -> str:
    """``path`` relative to the working directory when inside it, ``~/...`` inside the home folder."""
    path = Path(path).expanduser().resolve()
    for base, shown in ((Path.cwd().resolve(), None), (Path.home().resolve(), "~")):
        if path.is_relative_to(base):
            relative = path.relative_to(base)
            return str(relative if shown is None else Path(shown) / relative)
    return str(path)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    info = describe_run(args.run)
    source = load_test_data(info, n=args.n, seed=args.seed, order=args.order)
    model = load_model(info.model_file, device="cpu")
    result = evaluate(
        model, source.data, resolve_attacks([args.attack]), args.eps, device=torch.device("cpu"),
        batch_size=args.batch_size, seed=args.seed, checks=None, progress=lambda text: print(text, flush=True),
    )
    row = result.attacks[0]
    payload = {
        "model": _portable(info.model_file),
        "dataset": source.describe() | {"data_dir": _portable(source.data_dir)},
        "torch_threads": args.threads,
        "row": row.to_dict(),
        "clean": _bits(result.per_sample["clean"]),
        "robust": _bits(result.per_sample[args.attack]),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.attack}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{args.attack}: robust {row.robust_count}/{row.n} in {row.seconds:.0f} s", flush=True)


def merge(args: argparse.Namespace) -> None:
    out = Path(args.out)
    official = json.loads((out / "autoattack.json").read_text())
    other = json.loads((out / "autoattack-torchattacks.json").read_text())
    if official["clean"] != other["clean"] or official["dataset"] != other["dataset"]:
        sys.exit("the two runs did not evaluate the same images with the same clean predictions")
    attacked = [i for i, c in enumerate(official["clean"]) if c == "1"]
    a = [official["robust"][i] == "1" for i in attacked]
    b = [other["robust"][i] == "1" for i in attacked]
    both_robust = sum(x and y for x, y in zip(a, b))
    both_broken = sum(not x and not y for x, y in zip(a, b))
    only_official_breaks = sum((not x) and y for x, y in zip(a, b))
    only_torchattacks_breaks = sum(x and not y for x, y in zip(a, b))
    summary = {
        "model": official["model"],
        "dataset": official["dataset"],
        "n": official["row"]["n"],
        "clean_correct": len(attacked),
        "official": {k: official["row"][k] for k in ("robust_acc", "robust_count", "seconds", "settings")},
        "torchattacks": {k: other["row"][k] for k in ("robust_acc", "robust_count", "seconds", "settings")},
        "agreement": {
            "both_robust": both_robust,
            "both_broken": both_broken,
            "only_official_breaks": only_official_breaks,
            "only_torchattacks_breaks": only_torchattacks_breaks,
            "agree_fraction": (both_robust + both_broken) / len(attacked) if attacked else 1.0,
            "disagreeing_positions": [i for i, x, y in zip(attacked, a, b) if x != y],
        },
        "seconds_per_attacked_image": {
            "official": official["row"]["seconds"] / max(len(attacked), 1),
            "torchattacks": other["row"]["seconds"] / max(len(attacked), 1),
        },
    }
    (out / "side-by-side.json").write_text(json.dumps(summary, indent=2) + "\n")
    n = summary["n"]
    print("| implementation | robust accuracy | robust / n | seconds | s per attacked image |")
    print("| --- | --- | --- | --- | --- |")
    for name, key in (("official (pyautoattack 0.2.0)", "official"), ("torchattacks 3.5.1", "torchattacks")):
        row = summary[key]
        print(f"| {name} | {100 * row['robust_acc']:.1f}% | {row['robust_count']} / {n} | {row['seconds']:.0f} "
              f"| {summary['seconds_per_attacked_image'][key]:.2f} |")
    agreement = summary["agreement"]
    print(f"\nper sample, on {len(attacked)} clean-correct images: both robust {both_robust}, both broken "
          f"{both_broken}, broken only by the official {only_official_breaks}, only by torchattacks "
          f"{only_torchattacks_breaks} (agreement {100 * agreement['agree_fraction']:.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("run", help="evaluate one implementation")
    one.add_argument("run")
    one.add_argument("--attack", choices=["autoattack", "autoattack-torchattacks"], required=True)
    one.add_argument("--n", type=int, default=500)
    one.add_argument("--order", choices=["random", "first"], default="first")
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--eps", type=float, default=8 / 255)
    one.add_argument("--batch-size", type=int, default=128)
    one.add_argument("--threads", type=int, default=1)
    one.add_argument("--out", required=True)
    both = commands.add_parser("merge", help="compare the two runs per sample")
    both.add_argument("out")
    args = parser.parse_args()
    run(args) if args.command == "run" else merge(args)


if __name__ == "__main__":
    main()
