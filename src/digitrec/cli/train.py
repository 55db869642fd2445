"""``digitrec train``, ``train-line-reader``, ``train-verifier``, ``finetune`` and ``calibrate``: making models.

Each command's recipe flags are generated from its config dataclass (:mod:`digitrec.cfg`).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from digitrec.cfg import FinetuneConfig, LineTrainConfig, TrainConfig, VerifierConfig, list_presets
from digitrec.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    Parents,
    TrainProgress,
    check_outputs,
    download_progress,
    emit_json,
    err,
    int_at_least,
    load_data,
    step_bar,
    thread_count,
    torch_threads,
)
from digitrec.cli.flags import add_config_flags, config_from, given_fields
from digitrec.errors import ConfigError, DatasetError, DistributedError, first_line

if TYPE_CHECKING:
    from digitrec.train.distributed import Dist
    from digitrec.train.engine import TrainResult

if TYPE_CHECKING:
    from digitrec.data.mnist import MNIST

__all__ = ["add_commands"]


def cmd_train(args: argparse.Namespace) -> int:
    from digitrec.cfg.presets import preset_config
    from digitrec.train import distributed as ddp

    config = preset_config(args.preset, **given_fields(args, TrainConfig))
    if args.resume and not args.checkpoint:
        raise ConfigError("--resume needs --checkpoint FILE")
    config.validate()
    out = Path(args.out)
    history_plot = None if args.no_plot else Path(args.history_plot or out.with_name(f"{out.stem}-history.png"))
    check_outputs(history_plot, model=out)
    if args.checkpoint:
        check_outputs(model=Path(args.checkpoint))
        if Path(args.checkpoint).resolve() in (out.resolve(), history_plot and history_plot.resolve()):
            raise ConfigError(f"{args.checkpoint} is given for two outputs; use different file names")
    if args.nproc is not None:
        return _launch(args, config.batch_size)
    if not ddp.in_torchrun():
        return _train(args, config, out, history_plot, None)
    dist = ddp.join(args.device)
    try:
        # The ranks on a node share its cores (without --threads: an equal share each).
        with thread_count(None if args.threads else ddp.rank_threads(dist.local_world)):
            return _train(args, config, out, history_plot, dist)
    except RuntimeError as exc:
        if not ddp.is_peer_error(exc):
            raise
        if os.environ.get(ddp.LAUNCHED_ENV):
            return EXIT_ERROR  # `--nproc` reports the rank that failed first, in one line
        raise DistributedError(f"rank {dist.rank}: lost contact with another process of the run "
                               f"({first_line(exc)}); no model file written") from exc
    finally:
        dist.close()


def _launch(args: argparse.Namespace, batch_size: int) -> int:
    from digitrec.train import distributed as ddp

    if ddp.in_torchrun():
        raise ConfigError("--nproc starts the processes itself; under torchrun leave it out")
    if batch_size % args.nproc:
        raise ConfigError(f"batch size {batch_size} is not divisible by --nproc {args.nproc} "
                          "(the batch is the global one; each process takes an equal share)")
    if args.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"--nproc takes --device auto, cpu or cuda (each process uses the GPU of its local "
                          f"rank), got {args.device!r}")
    addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = int(os.environ.get("MASTER_PORT") or ddp.free_port(addr))
    return ddp.launch(args.nproc, _without_nproc(args.argv), master_addr=addr, master_port=port)


def _without_nproc(argv: list[str]) -> list[str]:
    # The ranks get the command as given, less --nproc (or an abbreviation argparse accepted).
    out, skip = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if skip:
            skip = False
        elif len(name) > 3 and "--nproc".startswith(name):
            skip = "=" not in token
        else:
            out.append(token)
    return out


def _train(args: argparse.Namespace, config: TrainConfig, out: Path, history_plot: Path | None,
           dist: Dist | None) -> int:
    from digitrec.runtime import resolve_device
    from digitrec.train.engine import train

    main = dist is None or dist.is_main  # the other ranks train, then wait for rank 0 to write the files
    device = dist.device if dist is not None else resolve_device(args.device)
    if not main:
        dist.barrier()  # type: ignore[union-attr]  # rank 0 reads (or downloads) MNIST first
    mnist = load_data(args, quiet=not main)
    if dist is not None and main:
        dist.barrier()
    progress = TrainProgress(args.quiet or not main)
    if main and args.resume and Path(args.checkpoint).is_file() and not args.json:
        print(f"resuming from {args.checkpoint}", file=sys.stderr, flush=True)
    try:
        result = train(config, data=mnist, device=device, callback=progress,
                       checkpoint=args.checkpoint, resume=args.resume, dist=dist)
    finally:
        progress.close()
    status = EXIT_INTERRUPTED if result.interrupted or not result.history else 0
    if main:
        status = _report(args, config, result, out, history_plot, dist)
    if dist is not None:
        dist.barrier()  # every rank ends once the model file is written
    return status


def _report(args: argparse.Namespace, config: TrainConfig, result: TrainResult, out: Path,
            history_plot: Path | None, dist: Dist | None) -> int:
    if not result.history:
        err("interrupted before the first epoch completed; nothing saved")
        return EXIT_INTERRUPTED
    path = result.save(out)
    if not args.json:
        if result.interrupted:
            print(f"interrupted: kept the model of epoch {result.epochs_completed}")
        n = result.epochs_completed
        where = result.device if dist is None else \
            f"{dist.world} process{'es' if dist.world != 1 else ''} on {result.device}"
        print(f"trained {config.arch} on {result.dataset['name']} on {where} ({result.precision}): "
              f"{n} epoch{'s' if n != 1 else ''} in {result.train_seconds:.1f}s")
        if result.best_epoch is not None:
            print(f"kept the weights of epoch {result.best_epoch} (best validation accuracy)")
        if result.val is not None:
            print(f"validation: accuracy {result.val.accuracy:.2%}, loss {result.val.loss:.4f}")
        if result.test is not None:
            print(f"test:       accuracy {result.test.accuracy:.2%}, loss {result.test.loss:.4f}")
        print(f"saved model to {path}")
    plot = None
    if history_plot is not None:
        from digitrec.plots import plot_history

        plot = plot_history(result.history, history_plot)
        if not args.json:
            print(f"wrote training curves to {plot}")
    if args.json:
        emit_json({"model": str(path), "history_plot": str(plot) if plot else None, "device": result.device,
                   "precision": result.precision, "threads": torch_threads(), "interrupted": result.interrupted,
                   "processes": dist.world if dist is not None else 1, **result.metrics()})
    return EXIT_INTERRUPTED if result.interrupted else 0


def cmd_train_verifier(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.verifier import make_verifier

    config = config_from(args, VerifierConfig)
    config.validate()
    out = Path(args.out)
    check_outputs(model=out)
    mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
    bar = step_bar(config.lines, "cutting lines into candidates", "line", args.quiet)
    progress = TrainProgress(args.quiet)

    def advance(done: int, total: int) -> None:
        bar.update(done - bar.n)
        if done == total:
            bar.close()  # the epochs' bars come next

    try:
        run, path = make_verifier(config, args.model, mnist, out, device=resolve_device(args.device),
                                  line_progress=advance, callback=progress)
    finally:
        bar.close()
        progress.close()
    if path is None:
        err("interrupted before the first epoch completed; nothing saved")
        return EXIT_INTERRUPTED
    if args.json:
        emit_json(run.summary(path))
    else:
        print(f"{run.candidates:,} candidates from {config.lines - run.skipped_lines:,} lines "
              f"({run.skipped_lines} could not be read true); {run.positive_fraction:.0%} are whole digits")
        if run.result.val is not None:
            print(f"held-out candidates: accuracy {run.result.val.accuracy:.2%}, loss {run.result.val.loss:.4f}")
        print(f"saved verifier to {path}")
    return EXIT_INTERRUPTED if run.result.interrupted else 0


def cmd_train_line_reader(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.lines import save_line_reader, train_line_reader

    # The ink reader has its own architecture unless one is asked for.
    fixed = {"arch": "line-ctc"} if args.lines == "ink" and args.arch is None else {}
    config = config_from(args, LineTrainConfig, **fixed)
    config.validate()
    out = Path(args.out)
    check_outputs(model=out)
    device = resolve_device(args.device)
    mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
    bar = step_bar(config.steps, "training the line reader", "step", args.quiet)

    def advance(done: int, total: int, loss: float) -> None:
        bar.update(done - bar.n)
        if done % 50 == 0 or done == total:
            bar.set_postfix(loss=f"{loss:.3f}")

    # Without --threads, the line-making processes keep their cores: more torch threads than are
    # left only wait on each other (2 threads and a worker on 2 cores ran 3x slower per step).
    threads = args.threads or max(1, (os.cpu_count() or 1) - config.workers)
    try:
        # Training digits only: the test split stays unseen, for the robustness bench.
        with thread_count(threads):
            model, metrics = train_line_reader(config, mnist.train_images, mnist.train_labels, device=device,
                                               progress=advance)
    except KeyboardInterrupt:
        bar.close()  # before the message, so the bar does not overwrite it
        err("interrupted; nothing saved")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    path = save_line_reader(out, model, config, metrics)
    if args.json:
        emit_json({"model": str(path), "threads": threads, **metrics})
    else:
        print(f"validation lines ({metrics['val_lines']:,}, held-out training digits): "
              f"{metrics['val_exact']:.2%} read exactly; training {metrics['train_seconds']:.0f} s")
        print(f"saved line reader to {path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from digitrec.data.labelled import load_labelled
    from digitrec.data.mnist import load_mnist
    from digitrec.runtime import resolve_device
    from digitrec.train.finetune import finetune

    config = config_from(args, FinetuneConfig)
    config.validate()
    out = Path(args.out)
    check_outputs(model=out)
    data = load_labelled(args.data, skip_bad=args.skip_bad)
    if data.skipped:
        print(f"digitrec: skipped {len(data.skipped)} bad row(s), first: {data.skipped[0]}", file=sys.stderr,
              flush=True)
    # MNIST for replay (and a digit model's before/after test); not needed when replay is off.
    try:
        mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet)) if config.replay != 0 else None
    except DatasetError as exc:
        raise DatasetError(f"{exc} (MNIST is replayed while fine-tuning; --replay 0 fine-tunes without it)") from exc
    bar = step_bar(config.epochs, f"fine-tuning on {len(data):,} {data.kind}", "epoch", args.quiet)

    def advance(epoch: int, epochs: int, figures: dict[str, float]) -> None:
        bar.update(epoch - bar.n)
        bar.set_postfix(loss=f"{figures['loss']:.3f}", val=f"{figures['val_exact']:.1%}")

    try:
        result = finetune(data, args.model, config, device=resolve_device(args.device), mnist=mnist,
                          progress=advance)
    except KeyboardInterrupt:
        bar.close()
        err("interrupted; nothing saved")
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    path = result.save(out)
    m = result.metrics
    if args.json:
        emit_json({"model": str(path), "data": data.summary(), **m})
        return 0
    what = "read exactly" if data.kind == "numbers" else "right"
    print(f"validation share ({m['val_images']:,} of {len(data):,} images, held out): "
          f"{m['val_before']:.1%} {what} before, {m['val_after']:.1%} after "
          f"({_kept(m)}; {m['seconds']:.0f} s)")
    if "mnist_test_before" in m:
        print(f"MNIST test set: {m['mnist_test_before']:.2%} before, {m['mnist_test_after']:.2%} after")
    use = "digitrec read --model" if data.kind == "numbers" else "digitrec predict --model"
    print(f"saved {path}; use it with: {use} {path} IMAGE")
    return 0


def _calibrate_line_reader(args: argparse.Namespace, source: Path, out: Path, mnist: MNIST) -> int:
    from digitrec.train.lines import calibrate_line_reader_file

    with thread_count(args.threads or os.cpu_count() or 1):
        path, fitted = calibrate_line_reader_file(source, out, images=mnist.train_images, labels=mnist.train_labels)
    if args.json:
        emit_json({"model": str(path), **fitted})
        return 0
    print(f"temperature {fitted['temperature']:.4f}: validation NLL {fitted['val_nll']:.4f} -> "
          f"{fitted['val_nll_calibrated']:.4f}")
    print(f"blank penalty {fitted['blank_penalty']:g} nats: validation lines read exactly "
          f"{fitted['val_exact_plain']:.1%} -> {fitted['val_exact']:.1%}")
    print(f"wrote {path} (weights unchanged)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.fileio import check_writable
    from digitrec.models.header import bundled_models, read_metadata, resolve_model_path
    from digitrec.models.registry import list_models

    source = resolve_model_path(args.model)
    if not args.out and source in bundled_models().values():
        raise ConfigError(f"{args.model} is a bundled model; give --out FILE for the calibrated copy")
    meta = read_metadata(source)
    lines = meta.get("arch") in list_models("lines")
    if not meta.get("line_train_config" if lines else "train_config"):
        raise ConfigError(f"{args.model}: no training recipe stored, so its validation split cannot be rebuilt")
    if (meta.get("dataset") or {}).get("name", "mnist") != "mnist":
        raise ConfigError(f"{args.model}: trained on {meta['dataset']['name']}; calibrate fits on MNIST's "
                          "validation split only (train already calibrates on the dataset's own)")
    out = Path(args.out) if args.out else source
    check_writable(out)
    mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
    if lines:
        return _calibrate_line_reader(args, source, out, mnist)
    from digitrec.train.calibrate import calibrate_model_file

    path, report = calibrate_model_file(args.model, out, data=mnist)
    if args.json:
        emit_json({"model": str(path), **report.to_dict()})
        return 0
    print(f"temperature {report.temperature:.4f} fitted on {report.count:,} validation images")
    print(f"NLL {report.nll_before:.4f} -> {report.nll_after:.4f}; "
          f"ECE {report.ece_before:.2%} -> {report.ece_after:.2%}")
    print(f"wrote {path} (weights unchanged)")
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register the training commands."""
    p = sub.add_parser("train", parents=[parents.common, parents.dataset, parents.placement],
                       help="train a model on MNIST (or --dataset)",
                       description="Train on MNIST or another IDX dataset (--dataset; default: the notebook recipe, "
                       "Adam 1e-3, batch 100, 10 epochs), evaluate once on the test set, and save one model file "
                       "that stores the dataset's class names. A model of other classes than the digits "
                       "classifies images (predict, evaluate) but does not read digits or numbers.")
    p.add_argument("--preset", default="notebook", metavar="NAME",
                   help=f"training recipe to start from: {', '.join(list_presets())} (default: %(default)s); "
                   "the recipe flags below override it")
    recipe = p.add_argument_group("recipe (defaults: the notebook preset)")
    add_config_flags(recipe, TrainConfig, default_label="notebook")
    p.add_argument("--checkpoint", metavar="FILE", help="save the full training state to FILE after every epoch")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint FILE if it exists (same recipe flags), else start fresh")
    p.add_argument("--out", default="model.safetensors", help="model file to write (default: %(default)s)")
    p.add_argument("--history-plot", metavar="FILE", help="training curves (default: <out>-history.png)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the training curves")
    p.add_argument("--json", action="store_true", help="print one JSON object with the final metrics")
    p.add_argument("--nproc", type=int_at_least(1, 1024), metavar="N",
                   help="train with N processes on this machine (DistributedDataParallel through torchrun: gloo "
                   "on CPU, NCCL and one GPU each on CUDA); --batch-size stays the global batch. Several machines: "
                   "run 'torchrun --nnodes ... -m digitrec train' on each (see docs/distributed.md)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-line-reader", parents=[parents.common, parents.data, parents.placement],
                       help="train the line reader that reads numbers",
                       description="Train a network that reads a whole line of digits without cutting it (CTC), "
                       "on lines made on the fly from MNIST training digits: by default grey lines on simulated "
                       "paper (rules, separators, scanner effects), which 'digitrec read' reads pictures with; "
                       "--lines ink trains the older reader of binarised ink (arch line-ctc).")
    add_config_flags(p.add_argument_group("recipe"), LineTrainConfig)
    p.add_argument("--out", default="lines.safetensors", help="line reader file to write (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_line_reader)

    p = sub.add_parser("train-verifier", parents=[parents.common, parents.data, parents.placement],
                       help="train the piece verifier used when reading numbers",
                       description="Cut synthetic lines of MNIST training digits into the candidates the number "
                       "reader considers, label them (one whole digit or not) by aligning them with the true "
                       "number, and train a two-class network on them. 'digitrec read' uses it to tell whole "
                       "digits from parts and from touching digits run together.")
    p.add_argument("--model", default="best",
                   help="digit model the reader scores candidates with while labelling (default: %(default)s)")
    add_config_flags(p.add_argument_group("recipe"), VerifierConfig)
    p.add_argument("--out", default="verifier.safetensors", help="verifier file to write (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_train_verifier)

    p = sub.add_parser("finetune", parents=[parents.common, parents.data, parents.placement],
                       help="fine-tune the number reader or a digit model on your own labelled images",
                       description="Adapt a model to your own images: a CSV 'file,label' of whole numbers "
                       "(paths relative to the CSV, labels the digits, leading zeros kept) fine-tunes the grey "
                       "line reader that 'digitrec read' uses; a folder 0/ ... 9/ of single digits fine-tunes a "
                       "digit model. A seeded validation share is held out; the epoch that reads it best is kept. "
                       "Replay mixes in data made from MNIST training digits (needs --data-dir or a download).")
    p.add_argument("data", metavar="DATA", help="labels CSV (file,label) or ImageFolder of digits (0/ ... 9/)")
    p.add_argument("--model", default="default",
                   help="model file or bundled name to start from (default: the bundled line reader for a CSV, "
                   "'seed' for digits)")
    p.add_argument("--out", default="finetuned.safetensors", help="model file to write (default: %(default)s)")
    p.add_argument("--skip-bad", action="store_true",
                   help="leave out rows whose file is missing or undecodable or whose label is not digits, "
                   "and say how many (default: refuse the data)")
    add_config_flags(p.add_argument_group("recipe"), FinetuneConfig)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("calibrate", parents=[parents.common, parents.data, parents.threads],
                       help="fit a model's softmax temperature (and a line reader's blank penalty)",
                       description="Fit the temperature on the validation split the model was trained without "
                       "(rebuilt from its stored recipe) and store it in the model file; for a line reader, also "
                       "the blank penalty that reads most validation lines exactly. Weights stay unchanged.")
    p.add_argument("--model", required=True, help="model file (or bundled name) to calibrate")
    p.add_argument("--out", metavar="FILE", help="write the calibrated model here (default: replace --model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_calibrate)


def _kept(m: dict) -> str:
    """Which epoch's weights a fine-tuned model holds, in words."""
    if m["kept_epoch"] == 0:
        return "kept the starting weights: fine-tuning read the validation share no better"
    return f"kept epoch {m['kept_epoch']} of {m['epochs']}; best on validation: epoch {m['best_epoch']}"
