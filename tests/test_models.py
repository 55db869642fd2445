"""Tests for digitrec.models.registry: the registry, the model contract and the seed CNN's shape."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import digitrec.models as models
import digitrec.models.spec  # noqa: F401  (the table, for cleaning up a test registration)
from digitrec.errors import ConfigError
from digitrec.models import SeedCNN, SeedCNNConfig, count_parameters, format_summary, layer_table
from digitrec.models.registry import create_model, get_model_spec, list_models, register_model

SEED_PARAMS = 225_034


def seed_param_count(hidden: int = 128, flat: int = 1600) -> int:
    """Parameters of the seed CNN from its layer sizes (conv weights + biases, dense, dense)."""
    conv1 = 32 * 1 * 3 * 3 + 32
    conv2 = 64 * 32 * 3 * 3 + 64
    return conv1 + conv2 + (flat * hidden + hidden) + (hidden * 10 + 10)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_seed():
    assert "seed" in list_models()
    assert list_models() == sorted(list_models())
    spec = get_model_spec("seed")
    assert spec.builder is SeedCNN and spec.config_cls is SeedCNNConfig
    assert spec.description


def test_unknown_model_lists_available():
    with pytest.raises(ConfigError, match=r"unknown architecture 'resnet'.*available: .*seed"):
        create_model("resnet")


def test_unknown_config_field():
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) for 'seed': depth, width"):
        create_model("seed", {"width": 3, "depth": 2, "hidden": 64})


def test_register_model_and_duplicate():
    @dataclasses.dataclass(frozen=True)
    class TinyConfig:
        hidden: int = 4

    try:

        @register_model("test-tiny", TinyConfig)
        class Tiny(nn.Module):
            """A throwaway model for this test.

            Second paragraph is not part of the description.
            """

            def __init__(self, config: TinyConfig) -> None:
                super().__init__()
                self.config = config
                self.fc = nn.Linear(28 * 28, 10)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return self.fc(x.flatten(1))

        assert "test-tiny" in list_models()
        assert get_model_spec("test-tiny").description == "A throwaway model for this test."
        model = create_model("test-tiny", {"hidden": 7})
        assert isinstance(model, Tiny) and model.config.hidden == 7
        with pytest.raises(ValueError, match="already registered"):
            register_model("test-tiny", TinyConfig)(Tiny)
    finally:
        models.spec._REGISTRY.pop("test-tiny", None)
    assert "test-tiny" not in list_models()


def test_registering_existing_name_fails():
    with pytest.raises(ValueError, match="'seed' is already registered"):
        register_model("seed", SeedCNNConfig)(SeedCNN)
    assert get_model_spec("seed").builder is SeedCNN


# --- the contract every registered model meets --------------------------------------------------


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("batch", [1, 7])
def test_model_contract_forward(name, batch):
    torch.manual_seed(0)
    model = create_model(name).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_model_contract_channels_last(name):
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", list_models())
def test_model_contract_every_parameter_learns(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    x = torch.randn(8, 1, 28, 28)
    y = torch.arange(8) % 10
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, f"{pname} got a zero gradient"


@pytest.mark.parametrize("name", list_models())
def test_model_contract_has_config(name):
    model = create_model(name)
    spec = get_model_spec(name)
    assert isinstance(model.config, spec.config_cls)  # checkpoints store dataclasses.asdict(config)
    rebuilt = create_model(name, dataclasses.asdict(model.config))
    assert count_parameters(rebuilt) == count_parameters(model)


# --- the seed CNN -------------------------------------------------------------------------------


def test_seed_parameter_count():
    model = create_model("seed")
    assert seed_param_count() == SEED_PARAMS
    assert count_parameters(model) == (SEED_PARAMS, 0)
    assert sum(p.numel() for p in model.parameters()) == SEED_PARAMS


def test_seed_layer_table():
    model = create_model("seed").train()
    rows = layer_table(model)
    assert [(r.name, r.kind, r.output_shape, r.params) for r in rows] == [
        ("features.0", "Conv2d", (32, 26, 26), 320),
        ("features.1", "MaxPool2d", (32, 13, 13), 0),
        ("features.2", "ReLU", (32, 13, 13), 0),
        ("features.3", "Conv2d", (64, 11, 11), 18_496),
        ("features.4", "MaxPool2d", (64, 5, 5), 0),
        ("features.5", "ReLU", (64, 5, 5), 0),
        ("features.6", "Flatten", (1600,), 0),
        ("classifier.0", "Linear", (128,), 204_928),
        ("classifier.1", "ReLU", (128,), 0),
        ("classifier.2", "Linear", (10,), 1_290),
    ]
    assert sum(r.params for r in rows) == SEED_PARAMS
    assert model.training  # the mode is restored after the dummy pass
    assert not model.features[0]._forward_hooks  # and the hooks are removed


def test_seed_pool_before_relu_is_the_notebook_function():
    # The notebook applies ReLU then pooling; digitrec pools first (cheaper). Same outputs and
    # the same gradients, so models trained either way are interchangeable.
    torch.manual_seed(0)
    model = create_model("seed").train()
    f = model.features
    x = torch.randn(8, 1, 28, 28)
    y = torch.randint(0, 10, (8,))

    def notebook(inp: torch.Tensor) -> torch.Tensor:
        h = torch.max_pool2d(torch.relu(f[0](inp)), 2)
        h = torch.max_pool2d(torch.relu(f[3](h)), 2)
        return model.classifier(h.flatten(1))

    grads = []
    for forward in (model, notebook):
        model.zero_grad()
        out = forward(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    assert torch.equal(grads[0][0], grads[1][0])
    assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))


def test_seed_format_summary():
    text = format_summary(create_model("seed"), "seed")
    lines = text.splitlines()
    assert lines[0] == 'Model: "seed"'
    assert "Total params: 225,034 (879.04 KB)" in text
    assert "Trainable params: 225,034 (879.04 KB)" in text
    assert "Non-trainable params: 0 (0.00 KB)" in text
    assert any("features.0 (Conv2d)" in line and "(None, 32, 26, 26)" in line and line.endswith("320")
               for line in lines)
    assert any("(None, 1600)" in line for line in lines)
    assert format_summary(create_model("seed")).splitlines()[0] == 'Model: "SeedCNN"'


def test_count_parameters_frozen_and_buffers():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[0].weight.requires_grad_(False)
    # trainable: linear bias 3 + BN weight/bias 6; frozen: linear weight 12 + BN running stats 6.
    assert count_parameters(model) == (9, 18)


@pytest.mark.parametrize("hidden", [64, 200])
def test_seed_hidden_size_changes_parameter_count(hidden):
    model = create_model("seed", {"hidden": hidden})
    assert count_parameters(model)[0] == seed_param_count(hidden=hidden)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_seed_other_image_size_infers_flatten():
    model = create_model("seed", {"image_size": 32})
    # 32 -> conv 30 -> pool 15 -> conv 13 -> pool 6: 64 * 6 * 6 = 2304 features.
    assert count_parameters(model)[0] == seed_param_count(flat=2304)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    shapes = [r.output_shape for r in layer_table(model, (1, 32, 32))]
    assert (2304,) in shapes


def test_seed_num_classes_and_channels():
    model = create_model("seed", {"num_classes": 3, "in_channels": 3})
    assert model(torch.zeros(1, 3, 28, 28)).shape == (1, 3)


@pytest.mark.parametrize("config", [{"hidden": -1}, {"image_size": 4}, {"num_classes": -1}])
def test_unbuildable_configs_are_config_errors(config):
    with pytest.raises(ConfigError, match="cannot build 'seed'"):
        models.create_model("seed", config)


def test_check_model_output():
    models.check_model_output(models.create_model("seed"))
    with pytest.raises(ConfigError, match=r"expected \(1, 10\)"):
        models.check_model_output(models.create_model("seed", {"num_classes": 3}))
    with pytest.raises(ConfigError, match="does not accept"):
        models.check_model_output(models.create_model("seed", {"image_size": 32}))


# --- the VGG-style CNN --------------------------------------------------------------------------


def vgg_param_count(w: int = 32) -> int:
    """Trainable parameters of the VGG CNN: bias-free convs + BN scale/shift, dense head."""
    convs = [(1, w, 3), (w, w, 3), (w, w, 5), (w, 2 * w, 3), (2 * w, 2 * w, 3), (2 * w, 2 * w, 5), (2 * w, 4 * w, 4)]
    return sum(cin * cout * k * k + 2 * cout for cin, cout, k in convs) + 4 * w * 10 + 10


@pytest.mark.parametrize("width", [8, 32])
def test_vgg_parameter_count_and_shapes(width):
    model = create_model("vgg", {"width": width})
    assert count_parameters(model)[0] == vgg_param_count(width)
    shapes = {r.name: r.output_shape for r in layer_table(model)}
    assert shapes["features.6"] == (width, 12, 12)  # stride-2 5x5 conv halves the map
    assert shapes["features.16"] == (2 * width, 4, 4)
    assert shapes["features.23"] == (4 * width,)
    assert "Total params: 326,826" in format_summary(create_model("vgg"))


def test_vgg_dropout_only_in_training():
    torch.manual_seed(0)
    model = create_model("vgg", {"width": 8})
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("config", [{"width": 0}, {"dropout": 1.0}, {"dropout": -0.1}])
def test_vgg_bad_configs(config):
    with pytest.raises(ConfigError, match="cannot build 'vgg'"):
        create_model("vgg", config)


# --- the ensemble -------------------------------------------------------------------------------


def test_ensemble_averages_member_probabilities():
    torch.manual_seed(0)
    members = [{"arch": "seed", "model_config": {"hidden": 16}, "temperature": 1.0},
               {"arch": "vgg", "model_config": {"width": 4}, "temperature": 2.0}]
    model = create_model("ensemble", {"members": members}).eval()
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = (model.members[0](x).softmax(1) + (model.members[1](x) / 2.0).softmax(1)) / 2
        got = model(x)
    torch.testing.assert_close(got.softmax(1), expected)
    torch.testing.assert_close(got.exp(), expected)  # log of the average: softmax is a no-op
    assert all(k.startswith(("members.0.", "members.1.")) for k in model.state_dict())


@pytest.mark.parametrize("members, message", [
    ([], "at least one member"),
    ([{"model_config": {}}], "member 0 must be"),
    ([{"arch": "seed", "colour": 1}], "member 0 must be"),
    ([{"arch": "seed", "temperature": 0}], "bad temperature"),
    ([{"arch": "nope"}], "unknown architecture"),
])
def test_ensemble_bad_members(members, message):
    with pytest.raises(ConfigError, match=message):
        create_model("ensemble", {"members": members})
def test_fast_cnn_shapes_and_size():
    model = create_model("fast")
    rows = {r.name: r.output_shape for r in layer_table(model)}
    assert rows["features.0"] == (16, 12, 12) and rows["features.4"] == (32, 4, 4)
    assert rows["features.7"] == (512,)
    trainable, buffers = count_parameters(model)
    assert trainable == 400 + 32 + 12_800 + 64 + 512 * 128 + 128 + 1_290
    assert buffers == 2 * (16 + 32)  # BN running mean and variance


def test_catalog_matches_the_registered_builtins() -> None:
    # `digitrec models` lists from the torch-free catalogue; it must say what the registry builds.
    from digitrec.models.catalog import BUILTIN

    listed = {a.name: (a.task, a.params, a.description) for a in BUILTIN}
    registered = {}
    for name in models.list_models(None):
        spec = models.get_model_spec(name)
        if not spec.builder.__module__.startswith("digitrec.models."):
            continue  # registered by a test
        trainable, frozen = models.count_parameters(models.create_model(name))
        registered[name] = (spec.task, trainable + frozen, spec.description)
    assert listed == registered
