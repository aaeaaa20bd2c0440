"""Checkpoint loading: every format, architecture inference and specs, and every bad input, with real files."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from llc_core import DataConfig, LLCInputError, ModelConfig, RunConfig, SamplerConfig, build_problem, estimate_llc, run
from llc_core.files import checkpoint as ckpt
from llc_core.files import safe_read

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
TINY = SamplerConfig(chains=2, steps=60, step_size=1e-4)


def torch_bytes(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def mlp(bias: bool = True) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5, bias=bias), nn.ReLU(), nn.Linear(5, 2, bias=bias))


# ====================================================================== architecture inference


@pytest.mark.parametrize("names", [
    ["0", "2"], ["layers.0", "layers.1"], ["fc1", "fc2"], ["net.0", "net.2"], ["hidden", "output"],
])
def test_inference_from_common_names(names):
    state = OrderedDict()
    for name, (a, b) in zip(names, [(3, 5), (5, 2)]):
        state[f"{name}.weight"] = torch.zeros(b, a)
        state[f"{name}.bias"] = torch.zeros(b)
    spec = ckpt.infer_architecture(state, "tanh")
    assert ckpt.describe_architecture(spec) == "Linear 3→5 (bias) → tanh → Linear 5→2 (bias)"
    assert [layer["name"] for layer in spec["layers"] if layer["type"] == "linear"] == names


def test_inference_orders_by_natural_key_when_the_file_order_does_not_chain():
    # safetensors stores keys sorted as strings: fc10 before fc2; the widths only chain as fc1, fc2, ..., fc10
    widths = list(range(2, 13))
    state = {f"fc{i + 1}.weight": torch.zeros(b, a) for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))}
    shuffled = dict(sorted(state.items()))
    spec = ckpt.infer_architecture(shuffled, "identity")
    linear = [layer for layer in spec["layers"]]
    assert [layer["name"] for layer in linear] == [f"fc{i}" for i in range(1, 11)]
    assert all(layer["type"] == "linear" and not layer["bias"] for layer in linear)  # identity: no layers between


def test_square_layers_are_ordered_by_their_names_not_the_file_order():
    # safetensors does not keep the module's order, and square layers chain in any order
    state = {name: torch.zeros(3, 3) for name in ("2.weight", "0.weight", "1.weight")}
    spec = ckpt.infer_architecture(state, "identity", file_order_meaningful=False)
    assert [layer["name"] for layer in spec["layers"]] == ["0", "1", "2"]
    # unnumbered names: the file's order when it means something (torch.save keeps the module's)
    state = {name: torch.zeros(3, 3) for name in ("input.weight", "hidden.weight", "output.weight")}
    assert [l["name"] for l in ckpt.infer_architecture(state, "identity")["layers"]] == ["input", "hidden", "output"]


def test_inference_refuses_what_is_not_a_linear_stack():
    with pytest.raises(LLCInputError, match=r"not a stack of Linear layers \(conv.weight \(4, 3, 3, 3\)"):
        ckpt.infer_architecture({"conv.weight": torch.zeros(4, 3, 3, 3)})
    with pytest.raises(LLCInputError, match="do not chain"):
        ckpt.infer_architecture({"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2, 5)})
    with pytest.raises(LLCInputError, match="unknown activation 'swish'"):
        ckpt.infer_architecture({"a.weight": torch.zeros(4, 3)}, "swish")


def test_architecture_spec_builds_the_module_and_maps_names():
    spec = {"layers": [{"type": "flatten"}, {"type": "linear", "in": 4, "out": 3, "name": "enc"}, {"type": "gelu"},
                       {"type": "linear", "in": 3, "out": 1, "bias": False, "name": "dec"}]}
    module = ckpt.build_module(spec)
    weights = ckpt.map_state_dict(spec, {"enc.weight": torch.ones(3, 4), "enc.bias": torch.ones(3),
                                         "dec.weight": torch.ones(1, 3)})
    assert set(weights) == {"1.weight", "1.bias", "3.weight"} == {n for n, _ in module.named_parameters()}
    assert ckpt.load_weights(module, weights)(torch.ones(2, 2, 2)).shape == (2, 1)


@pytest.mark.parametrize("spec, message", [
    ("{not json", "not valid JSON"),
    ({"layers": []}, "non-empty \"layers\""),
    ({"layers": [{"type": "conv2d"}]}, "one of linear, flatten"),
    ({"layers": [{"type": "linear", "in": 2}]}, "needs \"out\""),
    ({"layers": [{"type": "linear", "in": 2, "out": 3}, {"type": "linear", "in": 4, "out": 1}]}, "takes 4 inputs"),
    ({"layers": [{"type": "relu", "in": 2}]}, "unknown key"),
    ({"layers": [{"type": "relu"}]}, "no linear layer"),
])
def test_bad_architecture_specs(spec, message):
    with pytest.raises(LLCInputError, match=message):
        ckpt.parse_architecture(spec)


def test_key_and_shape_diff_of_a_state_dict_that_does_not_fit():
    spec = ckpt.infer_architecture(mlp().state_dict())
    state = dict(mlp().state_dict())
    state.pop("2.bias")
    state["0.weight"] = torch.zeros(5, 4)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(LLCInputError) as err:
        ckpt.map_state_dict(spec, state)
    text = str(err.value)
    assert "missing [2.bias]" in text and "unexpected [extra.weight]" in text
    assert "0.weight: file (5, 4) vs model (5, 3)" in text


# ====================================================================== formats


@pytest.mark.parametrize("writer", ["safetensors", "torch_zip", "torch_legacy", "nested"])
def test_state_dict_formats_load_to_the_same_model(writer):
    model = mlp()
    state = model.state_dict()
    data = {
        "safetensors": lambda: safetensors_bytes({k: v.contiguous() for k, v in state.items()}),
        "torch_zip": lambda: torch_bytes(state),
        "torch_legacy": lambda: torch_bytes(state, _use_new_zipfile_serialization=False),
        "nested": lambda: torch_bytes({"model": state, "step": 100, "optimizer": {"lr": 0.1}}),
    }[writer]()
    loaded = ckpt.load_checkpoint(data)
    module, spec = ckpt.model_from_checkpoint(loaded, activation="relu")
    x = torch.randn(4, 3)
    assert torch.allclose(module(x), model(x))
    if writer == "nested":
        assert "used the state dict under key 'model'" in loaded.notes[0]


def test_state_dict_from_a_path_and_through_a_run_config(tmp_path):
    model = mlp()
    (tmp_path / "w.pt").write_bytes(torch_bytes(model.state_dict()))
    x = torch.randn(50, 3)
    import numpy as np

    np.savez(tmp_path / "d.npz", x=x.numpy(), y=model(x).detach().numpy())
    config = RunConfig(model=ModelConfig(kind="checkpoint", path=str(tmp_path / "w.pt"), activation="relu"),
                       data=DataConfig(path=str(tmp_path / "d.npz")), sampler=TINY)
    result = run(config)
    assert result.num_params == 3 * 5 + 5 + 5 * 2 + 2 and result.n == 50
    assert result.init_loss == pytest.approx(0.0, abs=1e-9)  # noise-free labels of w* itself
    assert RunConfig.from_dict(json.loads(json.dumps(result.config))).model.path == str(tmp_path / "w.pt")


def test_integer_features_run_through_a_linear_state_dict_as_floats(tmp_path):
    # integer inputs stay int64 (token ids) until a model that takes floats is given them
    import numpy as np

    model = mlp()
    (tmp_path / "w.safetensors").write_bytes(safetensors_bytes({k: v.contiguous() for k, v in model.state_dict().items()}))
    x = torch.randint(-3, 4, (40, 3))
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=model(x.float()).detach().numpy())
    config = RunConfig(model=ModelConfig(kind="checkpoint", path=str(tmp_path / "w.safetensors"), activation="relu"),
                       data=DataConfig(path=str(tmp_path / "d.npz")), sampler=TINY)
    problem = build_problem(config.model, config.data)
    assert problem.inputs.dtype == torch.float32
    assert "integer inputs converted to floats" in problem.info["data"]["notes"][-1]
    assert ckpt.check_model_accepts(problem.model, x).shape == (3, 2)


def test_export_program_parameters_are_w_star_and_the_estimator_runs_on_it():
    model = mlp()
    x = torch.randn(40, 3)
    program = torch.export.export(model, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    loaded = ckpt.load_checkpoint(buffer.getvalue())
    assert loaded.format == "export"
    module, spec = ckpt.model_from_checkpoint(loaded)
    assert spec is None and torch.allclose(module(x), model(x), atol=1e-6)
    assert {k: tuple(v.shape) for k, v in loaded.state_dict.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    result = estimate_llc(module, x, model(x).detach(), TINY)  # functional_call + vmap replace its parameters
    assert result.llc_mean is not None and result.init_loss == pytest.approx(0.0, abs=1e-9)
    # w* from another checkpoint of the same model is honoured
    shifted = {k: v + 0.1 for k, v in loaded.state_dict.items()}
    assert estimate_llc(module, x, model(x).detach(), TINY, w_star=shifted).init_loss > 1e-4


def test_export_program_with_a_fixed_batch_size_gets_the_fix_in_its_message():
    model = mlp()
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model, (torch.randn(2, 3),)), buffer)
    module, _ = ckpt.model_from_checkpoint(ckpt.load_checkpoint(buffer.getvalue()))
    with pytest.raises(LLCInputError, match="dynamic batch dimension"):
        ckpt.check_model_accepts(module, torch.randn(10, 3))


def test_examples_load():
    manifest = json.loads((EXAMPLES / "examples.json").read_text())
    for example in manifest["single"]:
        loaded = ckpt.load_checkpoint(EXAMPLES / example["checkpoint"])
        ckpt.model_from_checkpoint(loaded, activation=example.get("activation"))
    assert sum(p.stat().st_size for p in EXAMPLES.iterdir()) < 1_000_000


# ====================================================================== bad input, real files


class WritesAFile:
    """A pickle payload that, if unpickled, would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_that_would_run_code_is_refused_and_named(tmp_path):
    victim = tmp_path / "pwned.txt"
    data = torch_bytes({"weight": torch.zeros(2, 2), "payload": WritesAFile(victim)})
    expected = torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data))
    assert expected  # e.g. ['io.open']
    with pytest.raises(LLCInputError) as err:
        ckpt.load_checkpoint(data)
    assert all(name in str(err.value) for name in expected) and "nothing from it was run" in str(err.value)
    assert not victim.exists()


def test_plain_pickle_and_legacy_format_payloads_are_refused_and_named(tmp_path):
    victim = tmp_path / "pwned.txt"
    for data in (pickle.dumps({"w": WritesAFile(victim)}, protocol=2),
                 torch_bytes({"w": WritesAFile(victim)}, _use_new_zipfile_serialization=False)):
        with pytest.raises(LLCInputError, match=r"refused .*needs .*open"):
            ckpt.load_checkpoint(data)
    assert not victim.exists()


def test_a_whole_pickled_model_is_refused_with_its_classes_named():
    with pytest.raises(LLCInputError, match=r"torch\.nn\.modules\.container\.Sequential"):
        ckpt.load_checkpoint(torch_bytes(mlp()))


def test_export_archive_with_a_pickle_payload_is_refused_before_torch_loads_it(tmp_path):
    victim = tmp_path / "pwned.txt"
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(mlp(), (torch.randn(2, 3),)), buffer)
    evil = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as source, zipfile.ZipFile(evil, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            if info.filename.endswith("sample_inputs/model.pt"):
                body = torch_bytes({"x": WritesAFile(victim)})  # torch.export.load retries this with full pickle
            target.writestr(info, body)
    with pytest.raises(LLCInputError, match=r"refused .*open"):
        ckpt.load_checkpoint(evil.getvalue())
    assert not victim.exists()


def test_torchscript_is_refused():
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(mlp()), buffer)
    with pytest.raises(LLCInputError, match="TorchScript archives are refused"):
        ckpt.load_checkpoint(buffer.getvalue())


def test_corrupt_truncated_empty_wrong_type_and_oversized_files(tmp_path, monkeypatch):
    good = torch_bytes(mlp().state_dict())
    cases = {
        "truncated zip": (good[: len(good) // 2], "corrupt or truncated"),
        "truncated safetensors": (safetensors_bytes({"w": torch.zeros(100)})[:-50], "truncated"),
        "corrupt safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{\"w\": garbage!!}", "corrupt"),
        "empty": (b"", "is empty"),
        "png": (b"\x89PNG\r\n\x1a\n" + os.urandom(64), "a PNG image"),
        "text": (b"hello, this is not a checkpoint", "a text file"),
        "npz": (_npz_bytes(), "NumPy .npz archive"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / "upload.pt"  # the name says .pt whatever the bytes are
        path.write_bytes(data)
        with pytest.raises(LLCInputError, match=message):
            ckpt.load_checkpoint(path)
    monkeypatch.setattr(safe_read, "MAX_FILE_BYTES", 1000)
    with pytest.raises(LLCInputError, match=r"over the 0.000954 MiB limit"):
        ckpt.load_checkpoint(b"\x80\x02" + b"x" * 2000)
    with pytest.raises(LLCInputError, match="cannot read checkpoint"):
        ckpt.load_checkpoint(tmp_path / "missing.pt")


def test_nan_and_inf_weights_are_named():
    state = mlp().state_dict()
    state["2.weight"][0, 0] = float("nan")
    state["2.weight"][1, 1] = float("inf")
    with pytest.raises(LLCInputError, match=r"weight '2.weight' has 2 NaN/inf"):
        ckpt.load_checkpoint(safetensors_bytes({k: v.contiguous() for k, v in state.items()}))


def test_non_state_dict_contents():
    with pytest.raises(LLCInputError, match="single tensor"):
        ckpt.load_checkpoint(torch_bytes(torch.zeros(3)))
    with pytest.raises(LLCInputError, match="found no tensors"):
        ckpt.load_checkpoint(torch_bytes({"step": 3}))


def _npz_bytes() -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, x=np.zeros(3))
    return buffer.getvalue()


def test_exported_attention_with_a_dynamic_batch_samples_and_its_dropout_is_off(tmp_path):
    # torch.export records aten.sym_size for the dynamic batch (no vmap batching rule) and dropout in
    # train mode as a random op: the loader makes the graph vmappable and deterministic
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 8)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.drop = nn.Dropout(0.5)
            self.head = nn.Linear(8, 5)

        def forward(self, tokens):
            h = self.embed(tokens)
            h = h + self.attention(h, h, h, need_weights=False)[0]
            return self.head(self.drop(h).reshape(tokens.shape[0], -1, 8).mean(1))

    torch.manual_seed(0)
    tokens = torch.randint(0, 5, (64, 4))
    model = Block().train()
    program = torch.export.export(model, (tokens[:3],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "block.pt2")
    loaded = ckpt.load_checkpoint(tmp_path / "block.pt2")
    assert torch.equal(loaded.module(tokens), loaded.module(tokens))  # dropout off
    result = estimate_llc(loaded.module, tokens, tokens[:, 0], SamplerConfig(step_size=1e-5, chains=2, steps=20),
                          loss="cross_entropy", device="cpu")
    assert result.llc_mean is not None and not result.diverged_chains


def test_a_cnn_state_dict_is_refused_with_the_export_snippet(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    torch.save(model.state_dict(), tmp_path / "cnn.pt")
    loaded = ckpt.load_checkpoint(tmp_path / "cnn.pt")
    with pytest.raises(LLCInputError, match=r"torch\.export\.export\(model\.eval\(\).*upload the \.pt2"):
        ckpt.infer_architecture(loaded.state_dict)
