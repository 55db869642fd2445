"""``digitrec predict``, ``read`` and ``evaluate``: using a model on images and on MNIST."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from digitrec.cfg.base import BACKENDS, INFER_PRECISIONS, MAX_SEED, MIN_CONFIDENCE
from digitrec.cfg.batch import BatchConfig
from digitrec.cli.common import (
    EXIT_ERROR,
    Parents,
    check_outputs,
    download_progress,
    emit_json,
    err,
    fraction,
    int_at_least,
    load_data,
    note,
    run_each,
)
from digitrec.cli.flags import add_config_flags, config_from, given_fields
from digitrec.errors import ConfigError

__all__ = ["add_commands"]

def _predict_inputs(args: argparse.Namespace) -> list[tuple[str, tuple[Any, int | None]]]:
    """(name, (image source, true label or None)) for each requested input."""
    inputs: list[tuple[str, tuple[Any, int | None]]] = [(p, (p, None)) for p in args.images]
    if args.mnist_index is not None or args.random:
        import numpy as np

        from digitrec.data.mnist import load_mnist

        mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
        n = len(mnist.test_images)
        if args.random:
            index = int(np.random.default_rng(args.seed).integers(n))
        else:
            index = args.mnist_index
            if index >= n:
                raise ConfigError(f"--mnist-index {index} is out of range (test set has {n} images)")
        inputs.append((f"mnist:test:{index}", (mnist.test_images[index], int(mnist.test_labels[index]))))
    if not inputs:
        raise ConfigError("give image files, --mnist-index N or --random")
    return inputs


def _save_input(image: Any, path: str | Path) -> Path:
    """The 28x28 [0, 1] model input as an 8-bit greyscale PNG (or any format Pillow knows by suffix)."""
    import numpy as np
    from PIL import Image

    from digitrec.fileio import atomic_write

    target = Path(path)
    fmt = Image.registered_extensions().get(target.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--show-input: unknown image format {target.suffix or '(no suffix)'!r} (use .png)")
    img = Image.fromarray(np.clip(np.asarray(image) * 255 + 0.5, 0, 255).astype(np.uint8), mode="L")
    with atomic_write(target) as fh:
        img.save(fh, format=fmt)
    return target


def _verdict(pred: dict[str, Any], names: list[str] | None = None) -> str:
    """One line for a prediction's JSON form (``Prediction.to_dict``); ``names`` (a model of other classes
    than digits) shows each class's name."""
    if pred["digit"] is None:
        return "no digit found" if names is None else "nothing found (blank image)"

    def shown(c: int) -> str:
        return str(c) if names is None else f"{c} ({names[c]})"

    top = ", ".join(f"{shown(t['digit'])} {t['probability']:.1%}" for t in pred["top3"])
    unsure = "  UNSURE" if pred["unsure"] else ""
    return f"{shown(pred['digit'])}  confidence {pred['confidence']:.1%}{unsure}  top-3: {top}"


def _is_batch(args: argparse.Namespace) -> bool:
    """Whether the inputs are read as a batch: a folder or glob among them, or a batch flag given."""
    many = any(os.path.isdir(p) or (not os.path.exists(p) and set("*?[") & set(p)) for p in args.images)
    return many or bool(given_fields(args, BatchConfig))


def _run_batch(args: argparse.Namespace, task: str) -> int:
    """Folders, globs and files read in bulk (infer.batch, or Ray): rows to --out or to stdout."""
    from digitrec.infer.batch import ModelSpec, default_jobs, discover, run_batch

    config: BatchConfig = config_from(args, BatchConfig)
    config.validate()
    singles = [flag for flag, value in (("--show", args.show), ("--show-input", getattr(args, "show_input", None)),
                                        ("--mnist-index", getattr(args, "mnist_index", None)),
                                        ("--random", getattr(args, "random", False))) if value]
    if singles:
        raise ConfigError(f"{singles[0]} takes one image file, not a batch (folders, globs or batch flags)")
    if args.device != "cpu":
        raise ConfigError("batch reading runs on the CPU: use --device cpu (and --jobs for more processes)")
    if not args.images:
        raise ConfigError("give image files, folders or globs")
    spec = ModelSpec(model=args.model, task=task, backend=args.backend, min_confidence=args.min_confidence,
                     verifier=getattr(args, "verifier", None), line_reader=getattr(args, "line_reader", None))
    jobs = config.jobs or default_jobs()
    recogniser = spec.load()  # the model checked (and its ONNX graph cached for the workers) before any file
    chunks = None
    if config.engine == "ray":
        from digitrec.ray import ray_chunks

        def chunks(todo: Any) -> Any:
            return ray_chunks(todo, spec, address=config.address, jobs=config.jobs, chunk_size=config.chunk_size)

    bar: Any = None

    def on_start(done: int) -> None:
        nonlocal bar
        if not args.quiet:  # files/s and ETA; the files are counted once (a quick listing) for the total
            from tqdm.auto import tqdm

            bar = tqdm(total=sum(1 for _ in discover(args.images)), initial=done, unit="file", desc=task,
                       dynamic_ncols=True, leave=False, disable=None)

    def on_rows(rows: list[dict[str, Any]]) -> None:
        if bar is not None:
            bar.update(len(rows))
        if config.out is not None:
            return
        for row in rows:
            if row["error"] is not None:
                err(row["error"])
            if args.json:  # as for single files: the answer, or the path and the error
                emit_json({k: v for k, v in row.items() if k == "path" or (k == "error") == (row["error"] is not None)})
            elif row["error"] is None:
                print(f"{row['path']}: {_verdict(row) if task == 'digits' else _reading_line(row)}", flush=True)

    try:
        summary = run_batch(args.images, spec, out=config.out, fmt=config.output_format(), resume=config.resume,
                            jobs=1 if config.engine == "ray" else jobs, chunk_size=config.chunk_size, chunks=chunks,
                            on_rows=on_rows, on_start=on_start, recogniser=recogniser)
    finally:
        if bar is not None:
            bar.close()
    if config.out is not None:
        skipped = f", {summary.skipped} done before" if summary.skipped else ""
        failed = f", {summary.errors} could not be read (see their error field)" if summary.errors else ""
        note(f"wrote {summary.rows} rows to {config.out}{skipped}{failed}", args.json)
    return EXIT_ERROR if summary.errors else 0


def cmd_predict(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load

    if _is_batch(args):
        return _run_batch(args, "digits")
    check_outputs(args.show)
    if args.show_input:
        from digitrec.fileio import check_writable

        check_writable(args.show_input)
    inputs = _predict_inputs(args)
    if args.show and len(inputs) != 1:
        raise ConfigError("--show takes exactly one input image")
    if args.show_input and len(inputs) != 1:
        raise ConfigError("--show-input takes exactly one input image")
    rec = load(args.model, device=args.device, precision=args.precision, backend=args.backend,
               min_confidence=args.min_confidence, verifier=None, line_reader=None,  # single digits: no number helpers
               data_dir=args.data_dir)
    classes = list(rec.model_file.class_names)
    names = None if classes == [str(d) for d in range(10)] else classes  # e.g. a Fashion-MNIST model's

    def one(name: str, item: tuple[Any, int | None]) -> None:
        source, truth = item
        pred = rec.predict([source])[0]
        if args.json:
            named = {"class_name": names[pred.digit] if pred.digit is not None else None} if names else {}
            emit_json({"path": name, **pred.to_dict(), **named,
                       **({"true_label": truth} if truth is not None else {})})
        else:
            print(f"{name}{f' (true {truth})' if truth is not None else ''}: {_verdict(pred.to_dict(), names)}")
        if args.show_input:
            note(f"wrote {_save_input(pred.input, args.show_input)}", args.json)
        if args.show and pred.digit is not None:
            import numpy as np

            from digitrec.plots import plot_prediction

            shown = source if isinstance(source, np.ndarray) else pred.input
            note(f"wrote {plot_prediction(shown, pred, args.show, true_label=truth)}", args.json)

    return run_each(inputs, one, args.json)


def _reading_line(reading: dict[str, Any]) -> str:
    """One line for a reading's JSON form (``NumberReading.to_dict``)."""
    if reading["number"] is None:
        return "no number found"
    unsure = "  UNSURE" if reading["unsure"] else ""
    digits = "  ".join(f"{d['digit']} {d['confidence']:.1%}{'?' if d['unsure'] else ''} at {d['box'][0]},"
                       f"{d['box'][1]} {d['box'][2]}x{d['box'][3]}" for d in reading["digits"])
    return f"{reading['number']}  confidence {reading['confidence']:.1%}{unsure}  digits: {digits}"


def cmd_read(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load
    from digitrec.models.header import check_digit_classes

    if _is_batch(args):
        return _run_batch(args, "numbers")
    check_outputs(args.show)
    if args.show and len(args.images) != 1:
        raise ConfigError("--show takes exactly one input image")
    rec = load(args.model, device=args.device, backend=args.backend,
               min_confidence=args.min_confidence, verifier=args.verifier, line_reader=args.line_reader)
    check_digit_classes(rec.model_file)  # once, before any image: a Fashion-MNIST model reads no numbers

    def one(name: str, _: None) -> None:
        reading = rec.read(name)
        if args.json:
            emit_json({"path": name, **reading.to_dict()})
        else:
            print(f"{name}: {_reading_line(reading.to_dict())}")
        if args.show:
            from digitrec.data.preprocess import decode_image, to_grayscale
            from digitrec.plots import plot_reading

            decoded = decode_image(name)  # a big JPEG comes back smaller; the boxes are in the file's pixels
            note(f"wrote {plot_reading(to_grayscale(decoded.image), reading, args.show, scale=decoded.scale)}",
                 args.json)

    return run_each(((name, None) for name in args.images), one, args.json)


def _title(name: str) -> str:
    from digitrec.data.datasets import DATASETS

    return DATASETS[name].title if name in DATASETS else name


def _format_report(result: Any, class_names: Any = ()) -> str:
    named = list(class_names) not in ([], [str(d) for d in range(10)])  # digits need no name column
    width = max([len(n) for n in class_names] + [0]) + 2 if named else 0
    lines = [f"{'class':>5} {'':<{width}}{'precision':>9} {'recall':>7} {'f1':>7} {'support':>7}"]
    for c in range(len(result.support)):
        name = f"{class_names[c]:<{width}}" if named else ""
        lines.append(f"{c:>5} {name}{result.precision[c]:>9.4f} {result.recall[c]:>7.4f} {result.f1[c]:>7.4f} "
                     f"{int(result.support[c]):>7}")
    lines.append("")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    lines.append("     " + "".join(f"{c:>6}" for c in range(len(result.support))))
    for c, row in enumerate(result.confusion):
        lines.append(f"{c:>5}" + "".join(f"{v:>6}" for v in row))
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from digitrec.data.datasets import DATASETS
    from digitrec.infer.evaluate import check_classes, evaluate_model_file

    check_outputs(args.confusion, args.errors)
    if args.dataset in DATASETS:  # a known dataset's classes are known: refuse before any download
        check_classes(args.model, DATASETS[args.dataset].class_names, args.dataset)
    mnist = load_data(args)
    run = evaluate_model_file(args.model, mnist, split=args.split, device=args.device, precision=args.precision)
    written: dict[str, str] = {}
    if args.confusion or args.errors:
        from digitrec.plots import plot_confusion, plot_misclassified

        result = run.result
        if args.confusion:
            written["confusion_plot"] = str(plot_confusion(result.confusion, args.confusion,
                                                           title=f"{args.model}: {args.split} set"))
        if args.errors:
            images, labels = mnist.split(args.split)
            written["misclassified_plot"] = str(plot_misclassified(images, labels, result.predictions,
                                                                   result.confidences, args.errors))
    if args.json:
        emit_json({"model": args.model, "dataset": mnist.name, "split": args.split,
                   "class_names": list(run.class_names), **run.result.to_dict(), **written})
        return 0
    print(f"model {args.model} ({run.arch}) on the {_title(mnist.name)} {args.split} set "
          f"({len(run.result.predictions):,} images)")
    print(f"loss {run.result.loss:.4f}, accuracy {run.result.accuracy:.2%} ({run.result.errors} errors)")
    print()
    print(_format_report(run.result, run.class_names))
    for path in written.values():
        print(f"wrote {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register ``predict``, ``read`` and ``evaluate``."""
    backend_help = ("inference backend; auto uses ONNX Runtime when installed (each model's graph is exported "
                    "once and cached per user), else PyTorch (default: %(default)s)")
    p = sub.add_parser("predict", parents=[parents.common, parents.data], help="recognise digits in images",
                       description="Predict the digit in each image (PNG, JPEG, BMP, GIF, TIFF, WebP; any size "
                       "and mode), or in an MNIST test image.")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files, folders (read recursively) or globs")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--mnist-index", type=int_at_least(0), metavar="N", help="also predict MNIST test image N")
    which.add_argument("--random", action="store_true", help="also predict a random MNIST test image")
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED - 1), help="seed for --random (default: unseeded)")
    p.add_argument("--show", metavar="FILE", help="draw the image titled with true label, prediction and confidence")
    p.add_argument("--show-input", metavar="FILE", help="save the 28x28 image the model saw (PNG)")
    p.add_argument("--min-confidence", type=fraction, metavar="X",
                   help=f"flag answers below this calibrated confidence as unsure (default: {MIN_CONFIDENCE:.2f})")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=backend_help)
    p.add_argument("--precision", default="fp32", choices=INFER_PRECISIONS,
                   help="compute precision; int8 runs the model statically quantized by ONNX Runtime (CPU, the onnx "
                   "extra; calibrated once on MNIST validation images from --data-dir and cached) "
                   "(default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    add_config_flags(p.add_argument_group("batch (folders, globs; see docs/batch.md)"), BatchConfig)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("read", parents=[parents.common, parents.reading],
                       help="read whole numbers (lines of digits) in images",
                       description="Find each handwritten digit in a line of digits, left to right, and print "
                       "the number with per-digit confidence and boxes (x, y, width, height in image pixels).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (read recursively) or globs")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--min-confidence", type=fraction, metavar="X",
                   help=f"flag digits below this calibrated confidence as unsure (default: {MIN_CONFIDENCE:.2f})")
    p.add_argument("--show", metavar="FILE", help="draw the image with a labelled box per digit (.png, .svg or .pdf)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=backend_help)
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    add_config_flags(p.add_argument_group("batch (folders, globs; see docs/batch.md)"), BatchConfig)
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("evaluate", parents=[parents.common, parents.dataset, parents.inference],
                       help="evaluate a model on MNIST (or --dataset)",
                       description="Loss, accuracy, per-class precision/recall/F1 and the confusion matrix on "
                       "MNIST or the dataset the model was trained on (--dataset; its class names must match "
                       "the model's); with --confusion and --errors, also the confusion heatmap and a gallery of "
                       "misclassified images.")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--split", default="test", choices=["test", "train"],
                   help="the dataset's split (default: %(default)s)")
    p.add_argument("--confusion", metavar="FILE", help="draw the confusion heatmap to FILE (.png, .svg or .pdf)")
    p.add_argument("--errors", metavar="FILE", help="draw a gallery of misclassified images to FILE")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

