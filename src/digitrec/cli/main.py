"""The ``digitrec`` entry point: builds the parser from the command groups, runs one command, maps errors to exits.

Every expected failure ends with one line on stderr and a non-zero exit; ``--debug`` shows
the traceback instead. Building the parser imports neither PyTorch nor NumPy, so ``--help``
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from digitrec import __version__
from digitrec.cfg.base import INFER_PRECISIONS, PRECISIONS
from digitrec.cli import data, infer, models, serve, train
from digitrec.cli.common import EXIT_ERROR, EXIT_INTERRUPTED, Parents, Parser, err, int_at_least, thread_count
from digitrec.errors import DigitrecError

__all__ = ["main", "build_parser"]

_GROUPS = (data, models, train, infer, serve)  # each registers its commands, in the order --help lists them


def _parents() -> Parents:
    # SUPPRESS: a subcommand that does not see the flag must not reset what was given before it.
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
    data_opts = Parser(add_help=False)
    data_opts.add_argument("--data-dir", metavar="DIR",
                           help="folder with the four MNIST IDX files (default: $DIGITREC_DATA_DIR, then the user "
                           "cache; downloaded there if missing)")
    dataset_opts = Parser(add_help=False)  # commands that work on any IDX dataset, not only MNIST
    dataset_opts.add_argument("--dataset", default="mnist", metavar="NAME|DIR",
                              help="mnist, fashion-mnist, or a folder with four IDX files (train-images-idx3-ubyte, "
                              "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, raw or .gz) "
                              "and optionally classes.txt, one class name a line (default: %(default)s)")
    dataset_opts.add_argument("--data-dir", metavar="DIR",
                              help="folder with the named dataset's four IDX files (default: its setting, "
                              "$DIGITREC_DATA_DIR for MNIST or $DIGITREC_FASHION_MNIST_DIR; then "
                              "/usr/share/datasets/fashion-mnist for Fashion-MNIST (apt-get install "
                              "dataset-fashion-mnist); then the user cache; downloaded there if missing)")
    threads = Parser(add_help=False)
    threads.add_argument("--threads", type=int_at_least(1), metavar="N",
                         help="CPU threads for PyTorch (default: one per core); 1 is far faster on a busy machine")
    placement = Parser(add_help=False, parents=[threads])  # where to compute
    placement.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    device = Parser(add_help=False, parents=[placement])  # ... and in which precision
    device.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="compute precision; auto uses bf16 where the hardware runs it natively")
    inference = Parser(add_help=False, parents=[placement])  # ... for inference, where int8 is one more choice
    inference.add_argument("--precision", default="auto", choices=INFER_PRECISIONS,
                           help="compute precision; auto uses bf16 where the hardware runs it natively; int8 runs "
                           "the model statically quantized by ONNX Runtime (CPU, the onnx extra; calibrated once "
                           "on MNIST validation images and cached)")
    reading = Parser(add_help=False)  # the helper models that read numbers
    reading.add_argument("--verifier", default="bundled",
                         help="piece verifier telling whole digits from parts and touching pairs when reading "
                         "numbers: 'bundled', a file from 'digitrec train-verifier', or 'none' (default: %(default)s)")
    reading.add_argument("--line-reader", default="bundled",
                         help="line reader that reads a whole number without cutting it: 'bundled', a file from "
                         "'digitrec train-line-reader' or 'digitrec finetune', or 'none' (default: %(default)s)")
    return Parents(common=common, data=data_opts, dataset=dataset_opts, threads=threads, placement=placement,
                   device=device, inference=inference, reading=reading)


def build_parser() -> argparse.ArgumentParser:
    """The ``digitrec`` argument parser with all subcommands."""
    parser = Parser(prog="digitrec",
                    description="Handwritten-digit recognition: read digits and numbers in your images, train, "
                    "fine-tune, evaluate and serve MNIST models.")
    # Own actions, not the shared parent's: set_defaults would change the shared ones too.
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--version", action="version", version=f"digitrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    parents = _parents()
    for group in _GROUPS:
        group.add_commands(sub, parents)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given: `train --nproc` passes it on to the ranks
    try:
        with thread_count(getattr(args, "threads", None)):
            return int(args.func(args))
    except DigitrecError as exc:
        if args.debug:
            raise
        err(str(exc))
        return EXIT_ERROR
    except KeyboardInterrupt:
        if args.debug:
            raise
        err("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`digitrec ... | head`): stop quietly, as Unix tools do, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR
    except OSError as exc:
        if args.debug:
            raise
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        err(f"{where}{exc.strerror or exc}")
        return EXIT_ERROR
