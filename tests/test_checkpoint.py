"""Tests for digitrec.models.checkpoint: the safetensors model file, its metadata and its failure modes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as st_save
from safetensors.torch import save_file

import digitrec
from digitrec.data.preprocess import NORMALIZATION, Normalization
from digitrec.errors import ModelFileError
from digitrec.models.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    bundled_models,
    load_model,
    read_metadata,
    resolve_model_path,
    save_model,
)
from digitrec.models.registry import create_model


def seeded_model(**config):
    torch.manual_seed(0)
    return create_model("seed", config).eval()


def write_with_metadata(path: Path, model: torch.nn.Module, meta: dict) -> Path:
    """A safetensors file holding ``model``'s weights and an arbitrary digitrec metadata record."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path.write_bytes(st_save(tensors, metadata={"digitrec": json.dumps(meta)}))
    return path


def assert_one_line_error(exc_info, path: Path | None = None) -> str:
    message = str(exc_info.value)
    assert message and "\n" not in message
    if path is not None:
        assert str(path) in message
    return message


# --- round trip ---------------------------------------------------------------------------------


def test_round_trip_gives_identical_logits(tmp_path):
    # Loaded models are channels_last; compare with the same layout so the same kernels run.
    model = seeded_model().to(memory_format=torch.channels_last)
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
    path = save_model(tmp_path / "m.safetensors", model, "seed", {})
    assert path == tmp_path / "m.safetensors"
    loaded = load_model(path)
    assert not loaded.model.training
    assert loaded.path == path
    with torch.no_grad():
        assert torch.equal(loaded.model(x), expected)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_round_trip_contiguous_model(tmp_path):
    model = seeded_model()  # saved from the default layout, loaded as channels_last
    path = save_model(tmp_path / "nchw.safetensors", model, "seed", {})
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(load_model(path).model(x), model(x))


def test_metadata_fields(tmp_path):
    path = save_model(
        tmp_path / "m.safetensors", seeded_model(hidden=64), "seed", {"hidden": 64},
        normalization=Normalization(mean=0.5, std=0.25),
        class_names=list("abcdefghij"),
        extra={"note": "hello", "format": "overridden?"},
    )
    meta = read_metadata(path)
    assert meta["format"] == FORMAT  # extra cannot override the reserved fields
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["digitrec_version"] == digitrec.__version__
    assert meta["arch"] == "seed"
    assert meta["model_config"] == {"hidden": 64}
    assert meta["normalization"] == {"mean": 0.5, "std": 0.25}
    assert meta["class_names"] == list("abcdefghij")
    assert meta["note"] == "hello"
    loaded = load_model(path)
    assert loaded.arch == "seed"
    assert loaded.model_config == {"hidden": 64}
    assert loaded.normalization == Normalization(0.5, 0.25)
    assert loaded.class_names == list("abcdefghij")
    assert loaded.temperature == 1.0
    assert loaded.metadata["note"] == "hello"


def test_default_metadata(tiny_model_file):
    loaded = load_model(tiny_model_file)
    assert loaded.normalization == NORMALIZATION
    assert loaded.class_names == [str(i) for i in range(10)]


def test_temperature_from_metadata(tmp_path):
    path = save_model(tmp_path / "t.safetensors", seeded_model(), "seed", {}, extra={"temperature": 1.5})
    assert load_model(path).temperature == 1.5


def test_load_model_accepts_str_path(tiny_model_file):
    assert load_model(str(tiny_model_file)).path == tiny_model_file


# --- bundled models and path resolution ---------------------------------------------------------


def test_bundled_models_are_files():
    for name, path in bundled_models().items():
        assert path.is_file() and path.name == f"{name}.safetensors"


def test_unknown_bundled_name_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so the name cannot accidentally be a file here
    with pytest.raises(ModelFileError, match="no-such-model: no such model file or bundled model") as info:
        load_model("no-such-model")
    assert_one_line_error(info)


def test_local_file_shadows_bundled_name(tmp_path, monkeypatch, tiny_model_file):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").write_bytes(tiny_model_file.read_bytes())
    assert resolve_model_path("seed") == Path("seed")


def test_bundled_seed_resolves_and_loads():
    assert resolve_model_path("seed") == bundled_models()["seed"]
    assert load_model("seed").arch == "seed"


# --- bad files ----------------------------------------------------------------------------------


def _random_bytes(path: Path, _model_file: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated(path: Path, model_file: Path) -> None:
    blob = model_file.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _empty(path: Path, _model_file: Path) -> None:
    path.write_bytes(b"")


def _short(path: Path, _model_file: Path) -> None:
    path.write_bytes(b"\x10\x00\x00")


def _plain_safetensors(path: Path, _model_file: Path) -> None:
    save_file({k: v.contiguous() for k, v in seeded_model().state_dict().items()}, str(path))


def _other_metadata(path: Path, _model_file: Path) -> None:
    tensors = {k: v.contiguous() for k, v in seeded_model().state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "pt"})


def _metadata_not_json(path: Path, _model_file: Path) -> None:
    tensors = {"w": torch.zeros(2)}
    path.write_bytes(st_save(tensors, metadata={"digitrec": "{not json"}))


def _wrong_format(path: Path, _model_file: Path) -> None:
    write_with_metadata(path, seeded_model(), {"format": "something-else", "arch": "seed"})


def _hidden_mismatch(path: Path, model_file: Path) -> None:
    meta = read_metadata(model_file)
    meta["model_config"] = {"hidden": 64}  # the weights are for hidden=128
    write_with_metadata(path, seeded_model(), meta)


def _unknown_arch(path: Path, model_file: Path) -> None:
    meta = read_metadata(model_file)
    meta["arch"] = "transformer-xl"
    write_with_metadata(path, seeded_model(), meta)


def _missing_tensor(path: Path, model_file: Path) -> None:
    state = {k: v.contiguous() for k, v in seeded_model().state_dict().items()}
    state.pop("classifier.2.bias")
    path.write_bytes(st_save(state, metadata={"digitrec": json.dumps(read_metadata(model_file))}))


def _bad_normalization(path: Path, model_file: Path) -> None:
    meta = read_metadata(model_file)
    meta["normalization"] = {"average": 0.1}
    write_with_metadata(path, seeded_model(), meta)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_random_bytes, "not a digitrec model file"),
        (_truncated, "corrupt model file"),
        (_empty, r"not a digitrec model file \(too short\)"),
        (_short, r"not a digitrec model file \(too short\)"),
        (_plain_safetensors, r"not a digitrec model file \(no digitrec metadata\)"),
        (_other_metadata, r"not a digitrec model file \(no digitrec metadata\)"),
        (_metadata_not_json, r"not a digitrec model file \(no digitrec metadata\)"),
        (_wrong_format, "not a digitrec model file"),
        (_hidden_mismatch, "weights do not match the stored architecture"),
        (_unknown_arch, "unknown architecture 'transformer-xl'"),
        (_missing_tensor, "weights do not match the stored architecture"),
        (_bad_normalization, "weights do not match the stored architecture"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_bad_model_files(tmp_path, tiny_model_file, make, message):
    path = tmp_path / "bad.safetensors"
    make(path, tiny_model_file)
    with pytest.raises(ModelFileError, match=message) as info:
        load_model(path)
    assert_one_line_error(info, path)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelFileError, match="is a directory") as info:
        load_model(tmp_path)
    assert_one_line_error(info, tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file") as info:
        load_model(tmp_path / "missing.safetensors")
    assert_one_line_error(info)


def test_newer_format_version_asks_for_upgrade(tmp_path, tiny_model_file):
    meta = read_metadata(tiny_model_file)
    meta["format_version"] = FORMAT_VERSION + 1
    path = write_with_metadata(tmp_path / "future.safetensors", seeded_model(), meta)
    for loader in (load_model, read_metadata):
        newer = f"model format {FORMAT_VERSION + 1} is newer.*upgrade digitrec"
        with pytest.raises(ModelFileError, match=newer) as info:
            loader(path)
        assert_one_line_error(info, path)


@pytest.mark.parametrize("version", ["two", None, [2]])
def test_malformed_format_version_is_a_model_file_error(tmp_path, tiny_model_file, version):
    meta = read_metadata(tiny_model_file)
    meta["format_version"] = version
    path = write_with_metadata(tmp_path / "odd.safetensors", seeded_model(), meta)
    with pytest.raises(ModelFileError):
        load_model(path)


def test_too_large_file_is_refused_before_reading(tmp_path, monkeypatch, tiny_model_file):
    monkeypatch.setattr("digitrec.models.checkpoint.MAX_MODEL_BYTES", 1000)
    with pytest.raises(ModelFileError, match="too large"):
        load_model(tiny_model_file)


# --- failed writes ------------------------------------------------------------------------------


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, tiny_model_file):
    original = tiny_model_file.read_bytes()

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(ModelFileError, match="cannot write model file .*No space left on device") as info:
        save_model(tiny_model_file, seeded_model(hidden=64), "seed", {"hidden": 64})
    assert_one_line_error(info, tiny_model_file)
    monkeypatch.undo()
    assert tiny_model_file.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == [tiny_model_file.name]


def test_save_into_path_under_a_file_fails_cleanly(tmp_path, tiny_model_file):
    with pytest.raises(ModelFileError, match="cannot write model file"):
        save_model(tiny_model_file / "sub" / "m.safetensors", seeded_model(), "seed", {})


def test_save_creates_parent_directories(tmp_path):
    path = save_model(tmp_path / "a" / "b" / "m.safetensors", seeded_model(), "seed", {})
    assert load_model(path).arch == "seed"


def _with_meta(tmp_path: Path, model: torch.nn.Module, config: dict, **meta) -> Path:
    """A well-formed model file whose metadata fields are overridden by ``meta``."""
    path = save_model(tmp_path / "m.safetensors", model, "seed", config)
    header = read_metadata(path)
    header.update(meta)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    path.write_bytes(st_save(tensors, metadata={"digitrec": json.dumps(header)}))
    return path


@pytest.mark.parametrize(
    ("config", "meta", "needle"),
    [
        ({"num_classes": 2}, {}, "expected (1, 10)"),
        ({"image_size": 32}, {}, "does not accept 1x28x28"),
        ({"in_channels": 3}, {}, "does not accept 1x28x28"),
        ({}, {"temperature": 0}, "bad temperature"),
        ({}, {"temperature": "hot"}, "bad temperature"),
        ({}, {"normalization": {"mean": 0.1, "std": 0.0}}, "bad normalisation"),
        ({}, {"class_names": 5}, "class_names"),
        ({}, {"class_names": list("abc")}, "class_names"),
    ],
)
def test_well_formed_but_unusable_model_files_are_refused(tmp_path, config, meta, needle):
    """Files that parse but would crash or answer NaN later are refused on load, in one line."""
    path = _with_meta(tmp_path, seeded_model(**config), config, **meta)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_folder_named_like_a_bundled_model_does_not_shadow_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed").mkdir()
    assert resolve_model_path("seed") == bundled_models()["seed"]


@pytest.mark.parametrize("name", ["seed", "best"])
def test_parameter_count_from_the_header_matches_the_weights(name: str) -> None:
    # The server reports it without loading weights when it answers from a cached graph.
    from digitrec.models.header import parameter_count

    model = load_model(name).model
    assert parameter_count(name) == sum(p.numel() for p in model.parameters())
