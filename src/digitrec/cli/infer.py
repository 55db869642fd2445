"""``digitrec predict``, ``read`` and ``evaluate``: using a model on images and on MNIST."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from digitrec.cfg.base import BACKENDS, MAX_SEED, MIN_CONFIDENCE
from digitrec.cli.common import (
    Parents,
    check_outputs,
    download_progress,
    emit_json,
    fraction,
    int_at_least,
    load_data,
    note,
    run_each,
)
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


def _verdict(pred: Any, names: list[str] | None = None) -> str:
    """One line for a prediction; ``names`` (a model of other classes than digits) shows each class's name."""
    if pred.digit is None:
        return "no digit found" if names is None else "nothing found (blank image)"

    def shown(c: int) -> str:
        return str(c) if names is None else f"{c} ({names[c]})"

    top = ", ".join(f"{shown(d)} {p:.1%}" for d, p in pred.top)
    unsure = "  UNSURE" if pred.unsure else ""
    return f"{shown(pred.digit)}  confidence {pred.confidence:.1%}{unsure}  top-3: {top}"


def cmd_predict(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load

    check_outputs(args.show)
    if args.show_input:
        from digitrec.fileio import check_writable

        check_writable(args.show_input)
    inputs = _predict_inputs(args)
    if args.show and len(inputs) != 1:
        raise ConfigError("--show takes exactly one input image")
    if args.show_input and len(inputs) != 1:
        raise ConfigError("--show-input takes exactly one input image")
    rec = load(args.model, device=args.device, backend=args.backend,
               min_confidence=args.min_confidence, verifier=None, line_reader=None)  # single digits: no number helpers
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
            print(f"{name}{f' (true {truth})' if truth is not None else ''}: {_verdict(pred, names)}")
        if args.show_input:
            note(f"wrote {_save_input(pred.input, args.show_input)}", args.json)
        if args.show and pred.digit is not None:
            import numpy as np

            from digitrec.plots import plot_prediction

            shown = source if isinstance(source, np.ndarray) else pred.input
            note(f"wrote {plot_prediction(shown, pred, args.show, true_label=truth)}", args.json)

    return run_each(inputs, one, args.json)


def _reading_line(reading: Any) -> str:
    if reading.number is None:
        return "no number found"
    unsure = "  UNSURE" if reading.unsure else ""
    digits = "  ".join(f"{d.digit} {d.confidence:.1%}{'?' if d.unsure else ''} at {d.box[0]},{d.box[1]} "
                       f"{d.box[2]}x{d.box[3]}" for d in reading.digits)
    return f"{reading.number}  confidence {reading.confidence:.1%}{unsure}  digits: {digits}"


def cmd_read(args: argparse.Namespace) -> int:
    from digitrec.infer.recogniser import load
    from digitrec.models.header import check_digit_classes

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
            print(f"{name}: {_reading_line(reading)}")
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
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files")
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
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("read", parents=[parents.common, parents.reading],
                       help="read whole numbers (lines of digits) in images",
                       description="Find each handwritten digit in a line of digits, left to right, and print "
                       "the number with per-digit confidence and boxes (x, y, width, height in image pixels).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--min-confidence", type=fraction, metavar="X",
                   help=f"flag digits below this calibrated confidence as unsure (default: {MIN_CONFIDENCE:.2f})")
    p.add_argument("--show", metavar="FILE", help="draw the image with a labelled box per digit (.png, .svg or .pdf)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, or auto")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help=backend_help)
    p.add_argument("--json", action="store_true", help="print one JSON object per image")
    p.set_defaults(func=cmd_read)

    p = sub.add_parser("evaluate", parents=[parents.common, parents.dataset, parents.device],
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

