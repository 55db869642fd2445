"""``digitrec data`` and ``digitrec samples``: where MNIST is, whether it verifies, and what it looks like."""

from __future__ import annotations

import argparse

from digitrec.cli.common import EXIT_ERROR, Parents, check_outputs, download_progress, emit_json, err

__all__ = ["add_commands"]


def cmd_data(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import DATA_DIR_ENV, data_status, default_cache_dir, load_mnist

    if args.download:
        load_mnist(args.data_dir, progress=download_progress(args.quiet))
    status = data_status(args.data_dir)
    if args.json:
        emit_json({"ok": status.ok, "directory": status.directory, "files": status.files,
                   "class_counts": status.class_counts})
        return 0 if status.ok else EXIT_ERROR
    if status.directory is None:
        if args.data_dir:
            err(f"MNIST not found in {args.data_dir}; put the four IDX files there or add --download")
        else:
            err(f"MNIST not found; set {DATA_DIR_ENV} to a folder with the four IDX files, put them "
                f"in {default_cache_dir()}, or run 'digitrec data --download'")
        return EXIT_ERROR
    print(f"MNIST in {status.directory}")
    for base, info in status.files.items():
        if "error" in info:
            print(f"  {base:<24} UNREADABLE: {info['error']}")
            continue
        mark = "ok" if info["ok"] else "CHECKSUM MISMATCH"
        shape = "x".join(str(s) for s in info["shape"])  # type: ignore[attr-defined]
        print(f"  {base:<24} {shape:<12} sha256 {str(info['sha256'])[:16]}...  {mark}")
    for split, counts in status.class_counts.items():
        print(f"  {split:<5} {sum(counts):>6,} images; per class: {' '.join(str(c) for c in counts)}")
    return 0 if status.ok else EXIT_ERROR


def cmd_samples(args: argparse.Namespace) -> int:
    from digitrec.data.mnist import load_mnist
    from digitrec.plots import plot_samples

    check_outputs(args.out)
    mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
    print(f"train images {mnist.train_images.shape}, test images {mnist.test_images.shape}")
    print(f"wrote {plot_samples(mnist.train_images, mnist.train_labels, args.out)}")
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register ``data`` and ``samples``."""
    p = sub.add_parser("data", parents=[parents.common, parents.data], help="locate, verify and describe MNIST",
                       description="Report where MNIST is, whether its checksums match, shapes and class counts.")
    p.add_argument("--download", action="store_true", help="download the files first if missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("samples", parents=[parents.common, parents.data], help="draw one training image of each digit",
                       description="Draw the first training image of each digit 0-9 in a 2x5 grid.")
    p.add_argument("--out", default="samples.png", help="output image (.png, .svg or .pdf; default: %(default)s)")
    p.set_defaults(func=cmd_samples)
