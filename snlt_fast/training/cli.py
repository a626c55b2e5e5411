"""`snlt train`: train an SNLT (or SiamRPN) model from a config.

    snlt train --config synthetic-tiny --out runs/tiny
    snlt train --config my.yaml --out runs/r50 --set train.batch_size=16 --set schedule.lr=0.002
    snlt train --out runs/tiny --resume                  # continue from the newest checkpoint
    torchrun --nproc_per_node=2 -m snlt_fast train --config synthetic-tiny --out runs/ddp
"""

import sys

from snlt_fast.cli import CommandError, one_line


def add_parser(subparsers):
    from snlt_fast.training.config import PRECISIONS, bundled_names

    parser = subparsers.add_parser(
        "train",
        help="train a model from a config",
        description="Train an SNLT model. Bundled configs: " + ", ".join(bundled_names()) + ".",
    )
    parser.add_argument("--config", help="a bundled config name or a YAML file (with --resume: the run's own config.yaml by default)")
    parser.add_argument("--out", required=True, help="the run folder: config.yaml, metrics.csv, TensorBoard events, checkpoints/, final.pth")
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps in all (a checkpoint is written there)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="overrides the config's device")
    parser.add_argument("--precision", choices=PRECISIONS, help="overrides the config's precision (bf16: CPUs with AMX, GPUs; fp16: GPUs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.batch_size=16 (repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def _resolved_config(args):
    from pathlib import Path

    from snlt_fast.training.config import load_config

    overrides = list(args.set)
    if args.device:
        overrides.append(f"device={args.device}")
    if args.precision:
        overrides.append(f"precision={args.precision}")
    source = args.config
    if source is None:
        saved = Path(args.out) / "config.yaml"
        if not args.resume:
            raise CommandError("--config is required (a bundled name or a YAML file)")
        if not saved.is_file():
            raise CommandError(f"--resume without --config reads {saved}, which does not exist")
        source = str(saved)
    return load_config(source, overrides)


def run(args):
    from snlt_fast.training import distributed
    from snlt_fast.training.config import ConfigError
    from snlt_fast.training.loop import Trainer, TrainingError

    if args.max_steps is not None and args.max_steps < 1:
        raise CommandError(f"--max-steps must be at least 1, got {args.max_steps}")
    try:
        config = _resolved_config(args)
        trainer = Trainer(config, args.out, resume=args.resume, max_steps=args.max_steps, progress=not args.no_progress)
        final = trainer.run()
    except (ConfigError, TrainingError, ValueError, FileNotFoundError) as error:
        raise CommandError(one_line(error)) from None
    finally:
        distributed.shutdown()
    if trainer.context.is_main:
        where = f"final model {final} (snlt track --weights {final})" if final else f"checkpoint in {args.out}/checkpoints (continue with --resume)"
        print(f"snlt train: {trainer.end_step} steps done; {where}", file=sys.stderr)
    return 0
