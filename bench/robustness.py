"""Robustness bench: accuracy on real-world-like input, rejection of non-digits, calibration.

Sets (all generated deterministically by digitrec.data.synthetic from the MNIST *test* split, never
used for training or tuning; the unsure-rate is measured on the validation split):

- clean:        MNIST test digits as they are (pass-through)
- photographed: test digits photographed on paper (any canvas, off-centre, light, blur, JPEG,
                both polarities), through the pipeline; plus the naive "resize to 28x28" baseline
- lines:        numbers of 2-6 test digits, exact-match rate, spaced and with touching digits
- sklearn 8x8:  scikit-learn's bundled digits from other writers (needs the robustness extra),
                single and as lines of 2-6 digits (spaced and with touching digits)
- letters, scribbles, blanks: how often each is flagged unsure or "no digit"

Usage:  python bench/robustness.py [--model seed] [--verifier bundled|none|FILE]
                                  [--line-reader bundled|none|FILE] [--photos 2000] [--lines 500]
                                  [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path

import numpy as np
from _common import number_lines
from PIL import Image

from digitrec.data.mnist import load_mnist, split_train_val
from digitrec.data.synthetic import (
    available_fonts,
    letter_image,
    photograph,
    photographed_digit,
    scribble_image,
)
from digitrec.fileio import atomic_write
from digitrec.infer.recogniser import load

THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)


def flagged(preds, threshold: float) -> float:
    """Fraction answered "no digit" or below ``threshold``."""
    return float(np.mean([p.digit is None or p.confidence < threshold for p in preds]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="seed")
    ap.add_argument("--verifier", default="bundled", help="piece verifier for reading lines: bundled, none or a file")
    ap.add_argument("--line-reader", default="bundled", help="line reader for reading lines: bundled, none or a file")
    ap.add_argument("--photos", type=int, default=2000, help="photographed test digits")
    ap.add_argument("--lines", type=int, default=500, help="numbers per line set")
    ap.add_argument("--fonts", type=int, default=8, help="fonts for the letter set (PIL default if none)")
    ap.add_argument("--scribbles", type=int, default=300)
    ap.add_argument("--out", default="robustness.json")
    args = ap.parse_args()

    rec = load(args.model, verifier=args.verifier, line_reader=args.line_reader)
    mnist = load_mnist()
    tx, ty = mnist.test_images, mnist.test_labels
    results: dict[str, object] = {"model": args.model, "verifier": args.verifier, "line_reader": args.line_reader,
                                  "min_confidence": rec.min_confidence,
                                  "temperature": rec.model_file.temperature}

    def report(name: str, value: float, n: int, extra: str = "") -> None:
        print(f"{name:<34} {value:8.2%}  (n={n:,}){extra}", flush=True)

    t0 = time.perf_counter()
    clean = rec.predict_arrays(tx)
    acc = float(np.mean([p.digit == y for p, y in zip(clean, ty)]))
    results["clean_test_accuracy"] = acc
    report("clean MNIST test", acc, len(ty))

    n = min(args.photos, len(tx))
    photos = [photographed_digit(tx[i], 1_000_000 + i) for i in range(n)]
    preds = rec.predict(photos)
    acc = float(np.mean([p.digit == y for p, y in zip(preds, ty[:n])]))
    naive = rec.predict_arrays(np.stack([
        np.asarray(Image.fromarray(255 - im if np.median(im) > 127 else im).resize((28, 28), Image.Resampling.BOX))
        for im in photos
    ]))
    naive_acc = float(np.mean([p.digit == y for p, y in zip(naive, ty[:n])]))
    clean_sub = float(np.mean([p.digit == y for p, y in zip(clean[:n], ty[:n])]))
    results["photographed"] = {"n": n, "accuracy": acc, "clean_accuracy_same_digits": clean_sub,
                               "naive_resize_accuracy": naive_acc, "flagged_unsure": flagged(preds, rec.min_confidence)}
    report("photographed digits", acc, n, f"  clean on the same digits {clean_sub:.2%}")
    report("  naive resize to 28x28", naive_acc, n)

    rng = np.random.default_rng(7)
    for name, touching in (("lines_spaced", 0.0), ("lines_some_touching", 0.17)):
        exact = count_right = digits_ok = digits_in_count_right = 0
        for line, truth in number_lines(tx, ty, args.lines, rng, 2_000_000, touching):
            k = len(truth)
            reading = rec.read(line)
            exact += reading.number == truth
            if reading.number is not None and len(reading.number) == k:
                count_right += 1
                digits_in_count_right += k
                digits_ok += sum(a == b for a, b in zip(reading.number, truth))
        results[name] = {"n": args.lines, "exact": exact / args.lines, "touching_gap_fraction": touching,
                         "digit_count_right": count_right / args.lines,
                         "digit_accuracy_where_count_right": digits_ok / max(digits_in_count_right, 1)}
        report(f"numbers of 2-6 digits ({name[6:]})", exact / args.lines, args.lines,
               f"  digit count right {count_right / args.lines:.1%}")

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print("sklearn 8x8 digits: skipped (pip install 'digitrec[robustness]')")
    else:
        d = load_digits()
        # (1797, 8, 8) white on black, cropped to the digit's box: give them a margin, as on paper.
        imgs = np.pad((d.images / 16.0 * 255).astype(np.uint8), ((0, 0), (2, 2), (2, 2)))
        big = [np.asarray(Image.fromarray(im).resize((96, 96), Image.Resampling.BICUBIC)) for im in imgs]
        preds = rec.predict(big)
        acc = float(np.mean([p.digit == y for p, y in zip(preds, d.target)]))
        results["sklearn_8x8"] = {"n": len(imgs), "accuracy": acc}
        report("sklearn 8x8 (other writers)", acc, len(imgs))
        # Numbers written by those other writers: each 8x8 digit (with its margin) as a 28x28
        # MNIST-sized image, then lines of them as for the test digits.
        as28 = np.stack([np.asarray(Image.fromarray(im).resize((28, 28), Image.Resampling.BICUBIC)) for im in imgs])
        rng = np.random.default_rng(8)
        for name, touching in (("sklearn_lines_spaced", 0.0), ("sklearn_lines_some_touching", 0.17)):
            exact = 0
            for line, truth in number_lines(as28, d.target, args.lines, rng, 6_000_000, touching):
                exact += rec.read(line).number == truth
            results[name] = {"n": args.lines, "exact": exact / args.lines, "touching_gap_fraction": touching}
            report(f"sklearn numbers ({name[14:]})", exact / args.lines, args.lines)

    fonts = available_fonts()[: args.fonts] or [None]
    letters = string.ascii_letters
    letter_imgs = [letter_image(c, f, 3_000_000 + i) for i, (c, f) in
                   enumerate((c, f) for f in fonts for c in letters)]
    letter_preds = rec.predict(letter_imgs)
    scribble_preds = rec.predict([scribble_image(4_000_000 + i) for i in range(args.scribbles)])
    sizes = np.random.default_rng(9).integers(30, 600, (200, 2))
    blank_preds = rec.predict([photograph(np.zeros((int(h), int(w)), np.float32), np.random.default_rng(5_000_000 + i))
                               for i, (h, w) in enumerate(sizes)])
    _, _, vx, vy = split_train_val(mnist.train_images, mnist.train_labels, 5000,
                                   int(rec.metadata.get("train_config", {}).get("seed", 0)))
    val_preds = rec.predict_arrays(vx)
    val_wrong = [p for p, y in zip(val_preds, vy) if p.digit != y]
    table = {
        str(t): {
            "letters_flagged": flagged(letter_preds, t),
            "scribbles_flagged": flagged(scribble_preds, t),
            "validation_digits_flagged": flagged(val_preds, t),
            "validation_errors_flagged": flagged(val_wrong, t),
        }
        for t in THRESHOLDS
    }
    results["rejection"] = {
        "letters": {"n": len(letter_imgs), "fonts": [str(f) if f else "PIL default" for f in fonts]},
        "scribbles": {"n": args.scribbles},
        "blank_photos_no_digit": float(np.mean([p.digit is None for p in blank_preds])),
        "by_threshold": table,
    }
    report("blank photos -> no digit", results["rejection"]["blank_photos_no_digit"], len(blank_preds))  # type: ignore[index]
    print(f"{'threshold':>9} {'letters':>8} {'scribbles':>9} {'val digits':>10} {'val errors':>10}")
    for t, row in table.items():
        print(f"{t:>9} {row['letters_flagged']:8.1%} {row['scribbles_flagged']:9.1%} "
              f"{row['validation_digits_flagged']:10.2%} {row['validation_errors_flagged']:10.1%}")
    results["seconds"] = round(time.perf_counter() - t0, 1)
    with atomic_write(Path(args.out), "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"wrote {args.out} ({results['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
