"""``digitrec data`` and ``digitrec samples``: where a dataset (default MNIST) is, whether it verifies, how it looks."""

from __future__ import annotations

import argparse

from digitrec.cli.common import EXIT_ERROR, Parents, check_outputs, emit_json, err, load_data

__all__ = ["add_commands"]


def cmd_data(args: argparse.Namespace) -> int:
    from digitrec.data.datasets import DATASETS, dataset_cache_dir, dataset_status

    if args.download:
        load_data(args)
    status = dataset_status(args.dataset, args.data_dir)
    if args.json:
        emit_json({"ok": status.ok, "dataset": status.name, "directory": status.directory, "files": status.files,
                   "class_counts": status.class_counts, "class_names": status.class_names, "error": status.error})
        return 0 if status.ok else EXIT_ERROR
    if status.directory is None:
        info = DATASETS.get(status.name)
        if info is None:
            err(f"{args.dataset}: missing IDX files; a dataset folder holds the four files listed in --help")
        elif args.data_dir:
            err(f"{info.title} not found in {args.data_dir}; put the four IDX files there or add --download")
        else:
            package = f"run 'apt-get install {info.package}', " if info.package else ""
            err(f"{info.title} not found; {package}set {info.env} to a folder with the four IDX files, put them "
                f"in {dataset_cache_dir(info)}, or run 'digitrec data{_flag(args)} --download'")
        return EXIT_ERROR
    print(f"{status.title} in {status.directory}")
    for base, entry in status.files.items():
        if "error" in entry:
            print(f"  {base:<24} UNREADABLE: {entry['error']}")
            continue
        mark = "ok" if entry["ok"] else "CHECKSUM MISMATCH"
        if status.name not in DATASETS:
            mark = "read (no known checksum)"
        shape = "x".join(str(s) for s in entry["shape"])  # type: ignore[attr-defined]
        print(f"  {base:<24} {shape:<12} sha256 {str(entry['sha256'])[:16]}...  {mark}")
    for split, counts in status.class_counts.items():
        print(f"  {split:<5} {sum(counts):>6,} images; per class: {' '.join(str(c) for c in counts)}")
    if status.error:
        print(f"  NOT USABLE: {status.error}")
    elif status.class_names != [str(d) for d in range(10)]:
        print(f"  classes: {', '.join(status.class_names)}")
    return 0 if status.ok else EXIT_ERROR


def _flag(args: argparse.Namespace) -> str:
    return "" if args.dataset == "mnist" else f" --dataset {args.dataset}"


def cmd_samples(args: argparse.Namespace) -> int:
    from digitrec.plots import plot_samples

    check_outputs(args.out)
    data = load_data(args)
    print(f"train images {data.train_images.shape}, test images {data.test_images.shape}")
    print(f"wrote {plot_samples(data.train_images, data.train_labels, args.out, data.class_names)}")
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register ``data`` and ``samples``."""
    p = sub.add_parser("data", parents=[parents.common, parents.dataset],
                       help="locate, verify and describe MNIST (or --dataset)",
                       description="Report where the dataset is (MNIST unless --dataset), whether its checksums "
                       "match, shapes and class counts.")
    p.add_argument("--download", action="store_true", help="download the files first if missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("samples", parents=[parents.common, parents.dataset],
                       help="draw one training image of each digit (or class of --dataset)",
                       description="Draw the first training image of each digit 0-9 (or each class of --dataset) "
                       "in a grid of five columns.")
    p.add_argument("--out", default="samples.png", help="output image (.png, .svg or .pdf; default: %(default)s)")
    p.set_defaults(func=cmd_samples)
