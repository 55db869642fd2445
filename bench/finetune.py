"""Fine-tune the bundled line reader (or digit model) on a labelled set and measure it on a share it never saw.

    python bench/finetune.py --csv ../shared/data/orand-car-a/labels.csv [--test-size 0.2] [--seeds 0]
    python bench/finetune.py --csv DIR/labels.csv --digits-coco DIR/boxes-coco.json

The set is split (seeded) into a **test share**, never shown to fine-tuning, and the rest,
which ``digitrec.finetune`` splits again into its own training and validation shares (the
validation share decides whether the epoch kept beats the start, and picks it with
``keep="best"``). The test share is read by the bundled reader and by the fine-tuned one:
that is the held-out figure to quote. Also reads lines generated from MNIST's held-out
validation digits before and after (what fine-tuning may forget). ``--every-epoch`` also
reads the test share after every epoch (a study of which epoch to keep; the run and its
result are unchanged). Writes ``bench/results/finetune.json``.

With ``--digits-coco`` (per-digit boxes in COCO format, as ORAND-CAR-A's ``boxes-coco.json``)
the digits are cut out into an ImageFolder instead, split by picture the same way, and the
bundled ``seed`` digit model is fine-tuned on them; its MNIST test accuracy is measured
before and after. Writes ``bench/results/finetune-digits.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import digitrec.train.finetune as finetuning
from digitrec.data.mnist import load_mnist, split_train_val
from digitrec.models.checkpoint import load_model
from digitrec.read.linereader import bundled_line_reader
from digitrec.train.finetune import FinetuneConfig, _line_view, finetune, load_labelled, read_exact
from digitrec.train.lines import LineTrainConfig, validation_lines

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402

DEFAULT_OUT = "bench/results/finetune.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", required=True, help="a file,label CSV of whole numbers")
    parser.add_argument("--test-size", type=float, default=0.2, help="share held out from fine-tuning (default 0.2)")
    parser.add_argument("--split-seed", type=int, default=0, help="which test share (0: recipes were chosen on it)")
    parser.add_argument("--seeds", default="0", help="comma-separated fine-tuning seeds (one run each)")
    parser.add_argument("--recipe", default="{}", help="JSON of FinetuneConfig fields to change")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: all cores)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--keep", metavar="DIR", help="also save each run's model here (finetuned-seedN.safetensors)")
    parser.add_argument("--digits-coco", metavar="JSON", help="per-digit boxes (COCO): fine-tune the digit model")
    parser.add_argument("--digit-model", default="seed", help="digit model to start from (default: seed)")
    parser.add_argument("--every-epoch", action="store_true",
                        help="also read the test share whenever the validation share is read (numbers only)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_labelled(args.csv)
    order = np.random.default_rng([1234, 5, args.split_seed] if args.split_seed else [1234, 5]).permutation(len(data))
    n_test = int(round(args.test_size * len(data)))
    if args.digits_coco:
        return digits(args, data, set(data.files[i] for i in order[:n_test]))
    test, rest = data.subset(sorted(order[:n_test])), data.subset(sorted(order[n_test:]))
    mnist = load_mnist()
    device = torch.device("cpu")
    base = load_model(bundled_line_reader(), device, num_classes=11, task="lines")
    test_views = [_line_view(g) for g in test.images]
    _, _, vx, vy = split_train_val(mnist.train_images, mnist.train_labels, 5000, 0)
    generated = validation_lines(LineTrainConfig(val_lines=300), vx, vy)
    gen_views, gen_truth = [v for v, _ in generated], [t for _, t in generated]

    def figures(model: torch.nn.Module, temperature: float, penalty: float) -> dict[str, float]:
        return {"test_exact": read_exact(model, test_views, test.labels, device, temperature, blank_penalty=penalty),
                "generated_exact": read_exact(model, gen_views, gen_truth, device, temperature,
                                              blank_penalty=penalty)}

    before = figures(base.model, base.temperature, base.blank_penalty)
    print(f"bundled reader: test {before['test_exact']:.1%}, generated {before['generated_exact']:.1%}", flush=True)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        config = FinetuneConfig(**{**json.loads(args.recipe), "seed": seed})
        watch = _TestShareWatch(test_views, test.labels, args.every_epoch)
        if args.every_epoch:
            finetuning.read_exact = watch.read_exact
        start = time.perf_counter()
        try:
            result = finetune(rest, None, config, device=device, mnist=mnist, progress=watch.progress)
        finally:
            finetuning.read_exact = read_exact
        seconds = time.perf_counter() - start
        after = figures(result.model, result.temperature, result.blank_penalty or 0.0)
        if args.keep:
            result.save(Path(args.keep) / f"finetuned-seed{seed}.safetensors")
        runs.append({"seed": seed, "seconds": seconds, **result.metrics, **after,
                     **({"curve": watch.curve} if args.every_epoch else {})})
        print(f"seed {seed}: test {after['test_exact']:.1%}, generated {after['generated_exact']:.1%}, "
              f"val {result.metrics['val_before']:.1%} -> {result.metrics['val_after']:.1%}, {seconds:.0f} s",
              flush=True)
    out = {"csv": str(args.csv), "images": len(data), "test_images": len(test), "finetune_images": len(rest),
           "split_seed": args.split_seed,
           "recipe": {**json.loads(args.recipe)}, "before": before, "runs": runs,
           "test_exact_median": float(np.median([r["test_exact"] for r in runs])),
           "threads": torch.get_num_threads(), "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


class _TestShareWatch:
    """Progress lines, and with ``every_epoch`` the test share read whenever finetune reads its validation share."""

    def __init__(self, views: list, truths: list[str], every_epoch: bool) -> None:
        self.views, self.truths, self.every_epoch = views, truths, every_epoch
        self.curve: list[dict[str, float]] = []  # per epoch: val_exact, test_exact
        self.last_test = float("nan")

    def read_exact(self, model, views, truths, device, temperature=1.0, *rest, **kwargs) -> float:  # noqa: ANN001
        # The same weights and decoding as the validation reading; training is not touched.
        self.last_test = read_exact(model, self.views, self.truths, device, temperature, *rest, **kwargs)
        return read_exact(model, views, truths, device, temperature, *rest, **kwargs)

    def progress(self, epoch: int, epochs: int, h: dict[str, float]) -> None:
        if self.every_epoch:
            self.curve.append({"epoch": epoch, "val_exact": h["val_exact"], "test_exact": self.last_test})
        print(f"  epoch {epoch}/{epochs}: loss {h['loss']:.3f}, val {h['val_exact']:.1%}"
              + (f", test {self.last_test:.1%}" if self.every_epoch else ""), flush=True)


def _cut_digits(coco: Path, csv_dir: Path, pictures: set[str], out: Path) -> int:
    """Write the digits of ``pictures`` (CSV paths) into an ImageFolder at ``out``; returns how many."""
    from PIL import Image

    boxes = json.loads(coco.read_text())
    names = {im["id"]: im["file_name"] for im in boxes["images"]}
    classes = {c["id"]: c["name"] for c in boxes["categories"]}
    count = 0
    for a in boxes["annotations"]:
        name = f"images/{names[a['image_id']]}"
        if name not in pictures:
            continue
        x, y, w, h = (int(round(v)) for v in a["bbox"])
        with Image.open(csv_dir / name) as im:
            m = 3  # a little paper around the ink, as a user cuts a digit out
            crop = im.convert("L").crop((max(0, x - m), max(0, y - m), x + w + m, y + h + m))
        folder = out / classes[a["category_id"]]
        folder.mkdir(parents=True, exist_ok=True)
        crop.save(folder / f"{a['id']}.png")
        count += 1
    return count


def digits(args: argparse.Namespace, data, test_pictures: set[str]) -> int:
    """The ``--digits-coco`` bench: fine-tune a digit model on digits cut from the pictures outside the test share."""
    import digitrec

    csv_dir = Path(args.csv).parent
    mnist = load_mnist()
    with tempfile.TemporaryDirectory() as tmp:
        train_dir, test_dir = Path(tmp) / "train", Path(tmp) / "test"
        n_train = _cut_digits(Path(args.digits_coco), csv_dir, set(data.files) - test_pictures, train_dir)
        n_test = _cut_digits(Path(args.digits_coco), csv_dir, test_pictures, test_dir)
        test_files = sorted(test_dir.glob("*/*.png"))
        truth = [int(p.parent.name) for p in test_files]

        def accuracy(model_path: str) -> float:
            rec = digitrec.load(model_path, verifier=None, line_reader=None)
            return float(np.mean([p.digit == t for p, t in zip(rec.predict([str(f) for f in test_files]), truth)]))

        before = accuracy(args.digit_model)
        print(f"{args.digit_model}: {before:.1%} of {n_test:,} test digits", flush=True)
        runs = []
        for seed in (int(s) for s in args.seeds.split(",")):
            config = FinetuneConfig(**{**json.loads(args.recipe), "seed": seed})
            # A few cut-outs hold no ink the pipeline finds (a box on a stray mark): left out, counted.
            result = finetune(load_labelled(train_dir, skip_bad=True), args.digit_model, config, mnist=mnist,
                              progress=lambda e, n, h: print(f"  epoch {e}/{n}: loss {h['loss']:.3f}, "
                                                             f"val {h['val_exact']:.1%}", flush=True))
            path = result.save(Path(tmp) / f"digits-seed{seed}.safetensors")
            after = accuracy(str(path))
            runs.append({"seed": seed, **result.metrics, "test_accuracy": after})
            print(f"seed {seed}: test digits {before:.1%} -> {after:.1%}, MNIST test "
                  f"{result.metrics['mnist_test_before']:.2%} -> {result.metrics['mnist_test_after']:.2%}, "
                  f"{result.metrics['seconds']:.0f} s", flush=True)
    out = {"csv": str(args.csv), "model": args.digit_model, "train_digits": n_train, "test_digits": n_test,
           "recipe": json.loads(args.recipe),
           "before": {"test_accuracy": before}, "runs": runs, "threads": torch.get_num_threads(),
           "machine": machine()}
    target = Path(args.out if args.out != DEFAULT_OUT else "bench/results/finetune-digits.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
