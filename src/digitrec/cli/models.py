"""``digitrec models``, ``summary``, ``ensemble``, ``export``, ``import-keras``: what models there are, making files."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from digitrec.cli.common import Parents, check_outputs, download_progress, emit_json, note
from digitrec.errors import ConfigError

__all__ = ["add_commands"]


def cmd_models(args: argparse.Namespace) -> int:
    # Without PyTorch: the built-in catalogue, the presets (plain configs) and the bundled files' headers.
    from digitrec.cfg.presets import PRESETS, preset_config
    from digitrec.models.catalog import BUILTIN
    from digitrec.models.header import bundled_models, read_metadata

    archs = [{"name": a.name, "params": a.params, "task": a.task, "description": a.description} for a in BUILTIN]
    bundled = []
    for name, path in sorted(bundled_models().items()):
        meta = read_metadata(path)
        bundled.append({"name": name, "arch": meta["arch"], "path": str(path),
                        "test_accuracy": meta.get("metrics", {}).get("test_accuracy")})
    presets: list[dict[str, Any]] = [{"name": n, "overrides": dict(o)} for n, o in PRESETS.items()]
    if args.json:
        emit_json({"architectures": archs, "presets": presets, "bundled": bundled})
        return 0
    for task, heading in (("digits", "architectures (--arch):"), ("lines", "line readers (train-line-reader):")):
        print(heading)
        for a in archs:
            if a["task"] == task:
                print(f"  {a['name']:<10} {a['params']:>10,} params  {a['description']}")
    print("training presets (train --preset):")
    for pr in presets:
        recipe = preset_config(pr["name"])
        n = len(pr["overrides"])
        epochs = f"{recipe.epochs} epoch{'s' * (recipe.epochs != 1)}"
        print(f"  {pr['name']:<10} arch {recipe.arch:<8} {epochs}, {n} overrides of the notebook recipe")
    print("bundled models (--model):")
    for b in bundled:
        acc = f"test accuracy {b['test_accuracy']:.2%}" if b["test_accuracy"] is not None else ""
        print(f"  {b['name']:<10} arch {b['arch']:<8} {acc}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from digitrec.models import count_parameters, create_model, format_summary, layer_table
    from digitrec.models.checkpoint import load_model

    check_outputs(args.diagram)
    if args.model:
        mf = load_model(args.model)
        model, name = mf.model, f"{args.model} ({mf.arch})"
    else:
        model, name = create_model(args.arch), args.arch
    if args.json:
        trainable, frozen = count_parameters(model)
        emit_json({
            "name": name,
            "layers": [{"name": r.name, "type": r.kind, "output_shape": list(r.output_shape), "params": r.params}
                       for r in layer_table(model)],
            "total_params": trainable + frozen,
            "trainable_params": trainable,
        })
    else:
        print(format_summary(model, name))
    if args.diagram:
        from digitrec.plots import plot_model_diagram

        note(f"wrote {plot_model_diagram(model, args.diagram, name=name)}", args.json)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from digitrec.models.ensemble import ensemble_files
    from digitrec.models.header import read_metadata

    out = Path(args.out)
    check_outputs(model=out)
    test = None
    if args.test:
        from digitrec.data.mnist import load_mnist

        mnist = load_mnist(args.data_dir, progress=download_progress(args.quiet))
        test = (mnist.test_images, mnist.test_labels)
    path = ensemble_files(args.models, out, half=args.fp16, test=test, device=args.device, precision=args.precision)
    metrics = read_metadata(path).get("metrics") or {}
    if args.json:
        emit_json({"model": str(path), "members": list(args.models), **metrics})
        return 0
    print(f"ensemble of {len(args.models)} models: {', '.join(args.models)}")
    if metrics:
        print(f"test: accuracy {metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f}")
    print(f"saved model to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from digitrec.infer.backends import export_onnx
    from digitrec.models.checkpoint import load_model

    if not args.out.lower().endswith(".onnx"):
        raise ConfigError(f"{args.out}: the output must end in .onnx")
    check_outputs(model=Path(args.out))
    if args.int8:
        from digitrec.infer.quantize import export_int8

        export_int8(load_model(args.model), args.out, args.data_dir, progress=download_progress(args.quiet))
    else:
        export_onnx(load_model(args.model), args.out)
    size = Path(args.out).stat().st_size
    precision = "int8" if args.int8 else "fp32"
    if args.json:
        emit_json({"model": args.model, "format": "onnx", "precision": precision, "path": args.out, "bytes": size})
    else:
        print(f"wrote {args.out} ({size / 1e6:.1f} MB, {precision}): input 'images' (N, 28, 28) float32 in [0, 1], "
              "output 'probabilities' (N, 10)")
    return 0


def cmd_import_keras(args: argparse.Namespace) -> int:
    from digitrec.models.header import read_metadata
    from digitrec.models.keras_import import import_keras

    out = Path(args.out)
    check_outputs(model=out)
    path = import_keras(args.file, out)
    meta = read_metadata(path)
    if args.json:
        emit_json({"model": str(path), "arch": meta["arch"], "model_config": meta["model_config"],
                   "imported_from": meta["imported_from"]})
        return 0
    print(f"imported {args.file} as {meta['arch']} ({meta['model_config']}); saved model to {path}")
    print(f"use it with: digitrec evaluate --model {path}   or   digitrec predict --model {path} IMAGE")
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register ``models``, ``summary``, ``ensemble``, ``export`` and ``import-keras``."""
    p = sub.add_parser("models", parents=[parents.common], help="list architectures, training presets and bundled "
                       "models", description="List the registered architectures, the training presets and the "
                       "models shipped with digitrec.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", parents=[parents.common], help="print a model's layer table",
                       description="Print a Keras-style summary: layers, output shapes, parameters.")
    p.add_argument("--arch", default="seed", help="architecture (default: %(default)s; see 'digitrec models')")
    p.add_argument("--model", help="summarise a model file or bundled model instead of a fresh architecture")
    p.add_argument("--diagram", metavar="FILE", help="also draw the layer diagram (.png, .svg or .pdf)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("ensemble", parents=[parents.common, parents.data, parents.device],
                       help="combine models into one ensemble model file",
                       description="Write one model file that averages the softmax probabilities of the given "
                       "models; every command accepts it like a single model.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="model files or bundled names (at least two)")
    p.add_argument("--out", required=True, help="ensemble model file to write")
    p.add_argument("--test", action="store_true",
                   help="evaluate the ensemble once on the MNIST test set and record the result in the file")
    p.add_argument("--fp16", action="store_true", help="store the weights in float16 (half the file size)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_ensemble)

    p = sub.add_parser("export", parents=[parents.common, parents.data], help="export a model for deployment (ONNX)",
                       description="Write a model as an ONNX graph that takes prepared (N, 28, 28) [0, 1] "
                       "images and returns class probabilities (normalisation and temperature included). "
                       "Needs the onnx extra: pip install 'digitrec[onnx]'.")
    p.add_argument("--model", default="seed", help="model file or bundled name (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FILE", help="ONNX file to write (.onnx)")
    p.add_argument("--int8", action="store_true",
                   help="write the int8 graph: statically quantized by ONNX Runtime, calibrated on 1,000 MNIST "
                   "validation images (read from --data-dir; never the test set)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import-keras", parents=[parents.common], help="import the notebook's saved Keras model",
                       description="Convert the reference notebook's Keras 3 model file (.keras: Conv2D, "
                       "MaxPooling2D, Flatten, Dense) into a digitrec model file of the 'seed' architecture, "
                       "without TensorFlow (needs h5py: pip install 'digitrec[keras]'). Nothing in the archive "
                       "is run: only its JSON config and weight arrays are read.")
    p.add_argument("file", metavar="FILE.keras", help="the saved Keras model")
    p.add_argument("--out", default="imported.safetensors", help="model file to write (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_import_keras)
