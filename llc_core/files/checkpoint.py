"""Load a user's trained weights safely and turn them into a module whose parameters are w*.

Formats (told apart by their bytes, never by the file name):

- safetensors: a state dict read with the safetensors library (no code can run).
- torch.save (.pt/.pth/.bin): read with `torch.load(weights_only=True)` only. A pickle that needs
  anything beyond tensors and plain containers is refused, and the message names its globals
  (`torch.serialization.get_unsafe_globals_in_checkpoint`, a static read of the pickle: no code runs).
  There is no fallback to full unpickling.
- torch.export (.pt2): a whole program. `torch.export.load` itself unpickles some archive members
  with `weights_only=False` (pickled weights and constants, and the sample inputs after a failed safe
  attempt), so every member that could be unpickled is checked first (`_check_export_archive`) and
  the load runs with TORCH_FORCE_WEIGHTS_ONLY_LOAD set; the program then runs only the ATen
  operators recorded in its graph, no Python code from the file.
- Hugging Face model folders (config.json + model.safetensors, `save_pretrained`), or a zip of one:
  an allow-listed transformers architecture built from the config, weights through safetensors
  (`huggingface.py`); the module takes token ids and returns logits.
- TorchScript: refused. `torch.jit.load` unpickles no code, but the archive carries TorchScript
  source that is compiled and run, so a file could do whatever TorchScript operators can do;
  `torch.export` gives the same whole-model convenience without that.

A state dict needs an architecture: for a stack of Linear layers it is inferred from the tensor
names and shapes (`infer_architecture`); otherwise a JSON spec gives it (`ARCHITECTURE_SPEC_HELP`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import threading
import zipfile
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from llc_core import defaults
from llc_core.errors import LLCInputError
from llc_core.files import datafiles
from llc_core.files.huggingface import LanguageModelLogits, check_token_inputs, is_model_directory, load_huggingface
from llc_core.problem import Problem
from llc_core.files import safe_read
from llc_core.files.safe_read import (COMPUTE_FLOATS, clip, few, file_kind, first_line, load_safetensors, plain_tensor_problem,
                                      read_limited, too_large, torch_load_weights_only, wrong_type_error)


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "identity": nn.Identity, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid,
    "silu": nn.SiLU, "softplus": nn.Softplus,
}
LAYER_TYPES = ("linear", "flatten", *ACTIVATIONS)

ARCHITECTURE_SPEC_HELP = (
    '{"layers": [{"type": "linear", "in": 4, "out": 8, "bias": true, "name": "fc1"}, {"type": "relu"}, '
    '{"type": "linear", "in": 8, "out": 1, "bias": true, "name": "fc2"}]}: layers run in order; '
    f"types are {', '.join(LAYER_TYPES)}; a linear layer's optional \"name\" is the prefix of its tensors "
    "in the state dict (default: its position, as in torch.nn.Sequential: \"0\", \"2\", ...)"
)

FORMAT_NAMES = {"safetensors": "safetensors state dict", "torch": "torch.save state dict",
                "export": "torch.export program (.pt2)",
                "huggingface": "Hugging Face model (config.json + model.safetensors)"}


@dataclass
class LoadedCheckpoint:
    """What a checkpoint file holds: a state dict (every format) and, for torch.export, the module."""

    format: str  # safetensors, torch, export or huggingface (FORMAT_NAMES)
    state_dict: dict[str, Tensor]  # for export and huggingface: the module's parameters, by its names
    module: nn.Module | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)  # what was done to read it (nested dict unwrapped, ...)


# ====================================================================== bytes and formats


# ====================================================================== safe loading


def load_checkpoint(source: bytes | str | os.PathLike) -> LoadedCheckpoint:
    """Read a checkpoint (bytes, a path, or a Hugging Face model folder) without running code from it;
    see the module docstring."""
    if is_model_directory(source):
        return _whole_model("huggingface", *load_huggingface(source))
    data = read_limited(source, "checkpoint")
    kind = file_kind(data)
    if kind == "huggingface":
        return _whole_model("huggingface", *load_huggingface(data))
    if kind == "safetensors":
        loaded = LoadedCheckpoint("safetensors", load_safetensors(data, "checkpoint"))
    elif kind == "torch":
        obj = torch_load_weights_only(data, "checkpoint")
        state_dict, notes = _state_dict_from(obj)
        loaded = LoadedCheckpoint("torch", state_dict, notes=notes)
    elif kind == "export":
        module = load_export(data)
        loaded = LoadedCheckpoint("export", {k: v.detach() for k, v in module.named_parameters()}, module)
    elif kind == "torchscript":
        raise LLCInputError(
            "TorchScript archives are refused: loading one compiles and runs the TorchScript code inside it. "
            "Save the weights instead (torch.save(model.state_dict(), 'model.pt') or safetensors), "
            "or export the model with torch.export.save(torch.export.export(model, (x,)), 'model.pt2')"
        )
    elif kind == "npz":
        raise LLCInputError("this is a NumPy .npz archive (a dataset?), not a checkpoint: upload it as data, "
                            "and the weights as .safetensors, .pt or .pt2")
    else:
        raise wrong_type_error(kind, "checkpoint", ".safetensors, .pt (torch.save of a state_dict), .pt2 (torch.export) "
                               "or a Hugging Face model folder (config.json + model.safetensors) or zip of one")
    _check_weights_finite(loaded.state_dict)
    if not loaded.state_dict:
        raise LLCInputError("the checkpoint holds no tensors: save model.state_dict(), not an empty dict")
    return loaded


def _whole_model(kind: str, module: nn.Module, notes: list[str]) -> LoadedCheckpoint:
    """A format that brings its module: the state dict is the module's parameters (tied ones once)."""
    state_dict = {name: value.detach() for name, value in module.named_parameters()}
    _check_weights_finite(state_dict)
    return LoadedCheckpoint(kind, state_dict, module, notes)


def _state_dict_from(obj: Any) -> tuple[dict[str, Tensor], list[str]]:
    """The name → tensor dict in what torch.load returned: a state dict, or one nested under a
    common key (training scripts often save {"model": state_dict, "optimizer": ..., "step": ...})."""
    if isinstance(obj, Tensor):
        raise LLCInputError("the file holds a single tensor, not a state dict: save model.state_dict()")
    if not isinstance(obj, dict):
        raise LLCInputError(f"the file holds a {type(obj).__name__}, not a state dict: save model.state_dict()")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if tensors:
        notes = [f"ignored non-tensor entries {few(sorted(map(str, set(obj) - set(tensors))))}"] if len(tensors) < len(obj) else []
        return {str(k): v for k, v in tensors.items()}, notes
    for key in ("state_dict", "model_state_dict", "model", "module", "net", "weights"):
        inner = obj.get(key)
        if isinstance(inner, dict) and any(isinstance(v, Tensor) for v in inner.values()):
            state_dict, notes = _state_dict_from(inner)
            return state_dict, [f"used the state dict under key {key!r}", *notes]
    raise LLCInputError(f"found no tensors in the file (top-level keys: {few(sorted(map(str, obj)))}): "
                        "save model.state_dict()")


def _check_weights_finite(state_dict: dict[str, Tensor]) -> None:
    for name, value in state_dict.items():
        problem = plain_tensor_problem(value)
        if problem:
            raise LLCInputError(f"weight {clip(name)!r} is {problem}: save the model's real-valued weights as plain dense "
                                "tensors (model.state_dict(), safetensors)")
        if value.is_floating_point() and value.dtype not in COMPUTE_FLOATS:
            value = value.float()
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise LLCInputError(f"weight {clip(name)!r} has {bad} NaN/inf value(s) of {value.numel()}: "
                                "the checkpoint was saved after training diverged; use an earlier one")


# ====================================================================== torch.export programs

_FORCE_LOCK = threading.Lock()
_EXECUTABLE_SUFFIXES = (".so", ".dll", ".dylib", ".py", ".pyc", ".cpp", ".sh", ".exe")


def load_export(data: bytes) -> nn.Module:
    """A torch.export archive's program as a module (ExportedProgram.module()), after checking that
    nothing in the archive would be unpickled unsafely (see the module docstring)."""
    _check_export_archive(data)
    with _force_weights_only():
        try:
            program = torch.export.load(io.BytesIO(data))
        except LLCInputError:
            raise
        except pickle.UnpicklingError as err:
            raise LLCInputError(f"refused to load the .pt2 program: a member needs unsafe globals ({first_line(err)})") from None
        except Exception as err:  # torch raises many types for a damaged or foreign archive
            raise LLCInputError(f"the .pt2 program cannot be loaded ({type(err).__name__}: {first_line(err)}): "
                                "save it with torch.export.save from the same or an older torch version") from None
        # still under the lock: module() compiles the program's guard code with ast.parse, which is not
        # safe in two threads at once on Python 3.11 (two sessions loading programs together)
        try:
            module = program.module()
        except Exception as err:
            raise LLCInputError(f"the .pt2 program cannot be turned into a module ({first_line(err)})") from None
    if not any(True for _ in module.parameters()):
        raise LLCInputError("the .pt2 program has no parameters to sample: export the model with its weights "
                            "as parameters (not buffers or constants)")
    return samplable_program(module)


def tensor_size(tensor: Tensor, dim: int) -> int:
    """tensor.shape[dim] as Python reads it: under torch.func.vmap the size without the chain dimension."""
    return tensor.shape[dim]


def samplable_program(module: nn.Module) -> nn.Module:
    """An exported program's graphs, changed so that chains can be vmapped through them and dropout is off.

    A program exported with a dynamic batch dimension reads sizes with aten.sym_size, which has no
    vmap batching rule; Python's shape lookup gives the same number and batches. Dropout recorded in
    train mode would make the likelihood random: the posterior is over weights, so it is switched off.
    """
    for graph_module in module.modules():
        graph = getattr(graph_module, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        changed = False
        for node in graph.nodes:
            if node.op != "call_function":
                continue
            if node.target is torch.ops.aten.sym_size.int:
                node.target, changed = tensor_size, True
            elif node.target is torch.ops.aten.dropout.default and len(node.args) == 3 and node.args[2] is not False:
                node.args, changed = (node.args[0], node.args[1], False), True
        if changed:
            graph_module.recompile()
    return module


@contextlib.contextmanager
def _force_weights_only():
    """Make any torch.load inside torch.export.load weights-only, whatever it asks for."""
    with _FORCE_LOCK:
        saved = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
            else:
                os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = saved


def _check_export_archive(data: bytes) -> None:
    """Refuse a .pt2 whose members torch.export.load would unpickle with full pickle (pickled
    weights or constants, custom or opaque objects) or whose torch.save members fail weights_only,
    and archives carrying executables (AOTInductor packages)."""
    for name, body in _export_members(data):
        if name.endswith("_config.json"):
            _check_payload_config(name, body)
        elif body[:1] == b"\x80" or body[:4] == b"PK\x03\x04" or name.endswith((".pt", ".pkl")):
            if body:
                torch_load_weights_only(body, f".pt2 member {name.split('/')[-1]!r}")


def _export_members(data: bytes) -> list[tuple[str, bytes]]:
    """Every member of a .pt2 archive, read in memory: the unpacked size bounded first (zipfile reads no
    further than a member's declared size), executables refused, a damaged archive one clear error."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if sum(i.file_size for i in infos) > safe_read.MAX_FILE_BYTES:
                raise LLCInputError(too_large(".pt2 archive (uncompressed)", sum(i.file_size for i in infos),
                                              safe_read.MAX_FILE_BYTES))
            members = []
            for info in infos:
                name = info.filename
                if name.endswith(_EXECUTABLE_SUFFIXES) or "/aotinductor/" in name:
                    raise LLCInputError(f"refused the .pt2 archive: it carries {name!r}, compiled or executable code; "
                                        "save the program with torch.export.save, not an AOTInductor package")
                members.append((name, archive.read(info)))
            return members
    except LLCInputError:
        raise
    except safe_read.ZIP_ERRORS as err:
        raise LLCInputError(f"the .pt2 archive is corrupt or truncated ({first_line(err)}): save it again with "
                            "torch.export.save") from None


def _check_payload_config(name: str, body: bytes) -> None:
    try:
        config = json.loads(body)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors; deep nesting
        raise LLCInputError(f"the .pt2 archive's {name.split('/')[-1]} is not valid JSON: the file is corrupt") from None
    entries = config.get("config", {}) if isinstance(config, dict) else {}
    for fqn, meta in entries.items():
        path = str(meta.get("path_name", "")) if isinstance(meta, dict) else ""
        if not isinstance(meta, dict) or meta.get("use_pickle") or path.startswith(("custom_obj", "opaque_obj")):
            raise LLCInputError(
                f"refused the .pt2 archive: {fqn!r} is stored as a pickled object, which torch.export.load unpickles "
                "without restrictions; export a model whose weights are plain tensors")


# ====================================================================== architectures


def natural_key(text: str) -> list:
    """'fc10' after 'fc2'; 'layers.10' after 'layers.2'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def infer_architecture(state_dict: dict[str, Tensor], activation: str = "relu",
                       file_order_meaningful: bool = True) -> dict[str, Any]:
    """The spec of a stack of Linear layers from tensor names and shapes, `activation` between them.

    Every tensor must be a `<prefix>.weight` (2-D) or `<prefix>.bias` (1-D) of a Linear layer, and
    the widths must chain (out of one = in of the next). The layers' order: the natural order of
    the prefixes when every prefix has a number in it (0 < 2 < 10, fc1 < fc2, layers.0 < layers.1);
    else the file's own order (torch.save keeps the module's; safetensors does not, so
    `file_order_meaningful` is False for it), else the natural order. Shapes alone cannot order
    square layers, hence names first.
    """
    _check_activation(activation)
    layers: dict[str, dict[str, Any]] = {}
    problems = []
    for key, value in state_dict.items():
        prefix, _, leaf = key.rpartition(".")
        entry = layers.setdefault(prefix, {"name": prefix})
        if leaf == "weight" and value.ndim == 2:
            entry["out"], entry["in"] = int(value.shape[0]), int(value.shape[1])
        elif leaf == "bias" and value.ndim == 1:
            entry["bias_size"] = int(value.shape[0])
        else:
            problems.append(f"{key} {tuple(value.shape)}")
    no_weight = [p for p, e in layers.items() if "out" not in e]
    problems += [f"{p}.bias without {p}.weight" for p in no_weight]
    if problems:
        raise LLCInputError(
            "cannot infer the architecture: not a stack of Linear layers (" + "; ".join(clip(p, 80) for p in problems[:5])
            + "). Convolution, normalisation, embedding and attention layers need the whole model: export it "
            "with torch.export.save(torch.export.export(model.eval(), (x[:2],), dynamic_shapes=({0: "
            "torch.export.Dim('batch')},)), 'model.pt2') and upload the .pt2 (or, for a Linear stack, give a "
            "JSON architecture spec)")
    for prefix, entry in layers.items():
        if "bias_size" in entry and entry["bias_size"] != entry["out"]:
            raise LLCInputError(f"{prefix}.bias has {entry['bias_size']} entries but {prefix}.weight has "
                                f"{entry['out']} outputs: the file mixes tensors of different layers")
    natural = sorted(layers, key=natural_key)
    numbered = all(re.search(r"\d", prefix) for prefix in layers)
    candidates = [natural] if numbered else ([list(layers)] if file_order_meaningful else []) + [natural]
    for order in candidates:
        chain = [layers[p] for p in order]
        if all(a["out"] == b["in"] for a, b in zip(chain, chain[1:])):
            return _spec_from_chain(chain, activation)
    shapes = few([f"{p}: {layers[p]['in']}→{layers[p]['out']}" for p in sorted(layers, key=natural_key)], 8)
    raise LLCInputError(f"cannot infer the architecture: the Linear layers' widths do not chain in order {shapes}. "
                        "Give a JSON architecture spec that says the order")


def _spec_from_chain(chain: list[dict[str, Any]], activation: str) -> dict[str, Any]:
    spec_layers: list[dict[str, Any]] = []
    for i, entry in enumerate(chain):
        if i and activation != "identity":
            spec_layers.append({"type": activation})
        spec_layers.append({"type": "linear", "in": entry["in"], "out": entry["out"],
                            "bias": "bias_size" in entry, "name": entry["name"]})
    return {"layers": spec_layers}


def _check_activation(activation: str) -> None:
    if activation not in ACTIVATIONS:
        raise LLCInputError(f"unknown activation {activation!r}: use one of {', '.join(ACTIVATIONS)}")


def parse_architecture(spec: Any) -> list[dict[str, Any]]:
    """The spec's layers, checked: every linear layer has whole-number in/out that chain, a bool bias
    and a unique name (default: its position in the built nn.Sequential)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError as err:
            raise LLCInputError(f"the architecture spec is not valid JSON ({err.msg} at line {err.lineno}, "
                                f"column {err.colno}); expected e.g. {ARCHITECTURE_SPEC_HELP}") from None
        except RecursionError:
            raise LLCInputError("the architecture spec is nested too deeply to be one: expected e.g. "
                                f"{ARCHITECTURE_SPEC_HELP}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("layers"), list) or not spec["layers"]:
        raise LLCInputError(f"the architecture spec must be an object with a non-empty \"layers\" list, e.g. {ARCHITECTURE_SPEC_HELP}")
    if set(spec) - {"layers"}:
        raise LLCInputError(f"unknown key(s) {sorted(set(spec) - {'layers'})} in the architecture spec: only \"layers\"")
    layers, names, width = [], set(), None
    for index, raw in enumerate(spec["layers"]):
        if not isinstance(raw, dict) or raw.get("type") not in LAYER_TYPES:
            raise LLCInputError(f"architecture layer {index} is {raw!r}: each layer is an object whose \"type\" "
                                f"is one of {', '.join(LAYER_TYPES)}")
        allowed = {"type", "in", "out", "bias", "name"} if raw["type"] == "linear" else {"type"}
        if set(raw) - allowed:
            raise LLCInputError(f"architecture layer {index} ({raw['type']}) has unknown key(s) "
                                f"{sorted(set(raw) - allowed)}: its keys are {sorted(allowed)}")
        layer = dict(raw)
        if raw["type"] == "linear":
            for key in ("in", "out"):
                value = raw.get(key)
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise LLCInputError(f"architecture layer {index} (linear) needs \"{key}\" as a whole number ≥ 1, got {value!r}")
            if width is not None and raw["in"] != width:
                raise LLCInputError(f"architecture layer {index} (linear) takes {raw['in']} inputs but the layer before "
                                    f"gives {width}: make them match")
            width = raw["out"]
            layer["bias"] = raw.get("bias", True)
            if not isinstance(layer["bias"], bool):
                raise LLCInputError(f"architecture layer {index}: \"bias\" must be true or false")
            layer["name"] = str(raw.get("name", index))
            if layer["name"] in names:
                raise LLCInputError(f"architecture layer {index}: name {layer['name']!r} is used twice")
            names.add(layer["name"])
        layers.append(layer)
    if width is None:
        raise LLCInputError("the architecture spec has no linear layer, so nothing to sample")
    return layers


def describe_architecture(spec: Any) -> str:
    """One line for people: 'Linear 4→8 (bias) → relu → Linear 8→1 (bias)'."""
    parts = []
    for layer in parse_architecture(spec):
        if layer["type"] == "linear":
            parts.append(f"Linear {layer['in']}→{layer['out']}{' (bias)' if layer['bias'] else ''}")
        else:
            parts.append(layer["type"])
    return " → ".join(parts)


def build_module(spec: Any) -> nn.Sequential:
    """An nn.Sequential of the spec's layers (fresh weights; see `load_weights`)."""
    modules: list[nn.Module] = []
    for layer in parse_architecture(spec):
        if layer["type"] == "linear":
            modules.append(nn.Linear(layer["in"], layer["out"], bias=layer["bias"]))
        elif layer["type"] == "flatten":
            modules.append(nn.Flatten())
        else:
            modules.append(ACTIVATIONS[layer["type"]]())
    return nn.Sequential(*modules)


def map_state_dict(spec: Any, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """The file's tensors renamed to the built module's parameter names ("<position>.weight"),
    after checking keys and shapes; the message lists every missing, unexpected and mis-shaped key."""
    expected: dict[str, tuple[str, tuple[int, ...]]] = {}  # file key -> (module key, shape)
    for position, layer in enumerate(parse_architecture(spec)):
        if layer["type"] != "linear":
            continue
        expected[f"{layer['name']}.weight"] = (f"{position}.weight", (layer["out"], layer["in"]))
        if layer["bias"]:
            expected[f"{layer['name']}.bias"] = (f"{position}.bias", (layer["out"],))
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {expected[k][1]}"
             for k in expected if k in state_dict and tuple(state_dict[k].shape) != expected[k][1]]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {few(missing)}")
        if unexpected:
            parts.append(f"unexpected {few(unexpected)}")
        if wrong:
            parts.append(f"shape mismatch {few(wrong)}")
        raise LLCInputError("the checkpoint does not fit the architecture: " + "; ".join(parts)
                            + ". Fix the architecture (layer names, sizes, bias) or upload the matching checkpoint")
    return {module_key: state_dict[file_key].detach().float() for file_key, (module_key, _) in expected.items()}


def load_weights(module: nn.Module, weights: dict[str, Tensor]) -> nn.Module:
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(weights[name])
    return module


def model_from_checkpoint(checkpoint: LoadedCheckpoint, architecture: Any = None,
                          activation: str | None = None) -> tuple[nn.Module, dict[str, Any] | None]:
    """The module whose parameters are the checkpoint's weights, and the architecture spec used
    (None for a torch.export program or a Hugging Face model, which bring their own)."""
    if checkpoint.module is not None:
        if architecture is not None or activation is not None:
            raise LLCInputError(f"a {FORMAT_NAMES[checkpoint.format]} brings its own architecture: leave architecture "
                                "and activation unset")
        return checkpoint.module, None
    if architecture is None:
        architecture = infer_architecture(checkpoint.state_dict, activation or "relu",
                                          file_order_meaningful=checkpoint.format != "safetensors")
    elif activation is not None:
        raise LLCInputError("give either an architecture spec or an activation (for an inferred Linear stack), not both")
    weights = map_state_dict(architecture, checkpoint.state_dict)
    return load_weights(build_module(architecture), weights), {"layers": parse_architecture(architecture)}


def weights_for(module: nn.Module, checkpoint: LoadedCheckpoint, architecture: Any = None) -> dict[str, Tensor]:
    """The checkpoint's weights under `module`'s parameter names (a later checkpoint of the same
    model, for a trajectory): by the architecture spec, or by name for a torch.export program."""
    if architecture is not None:
        return map_state_dict(architecture, checkpoint.state_dict)
    params = dict(module.named_parameters())
    missing = [k for k in params if k not in checkpoint.state_dict]
    unexpected = [k for k in checkpoint.state_dict if k not in params]
    wrong = [f"{k}: {tuple(checkpoint.state_dict[k].shape)} vs {tuple(p.shape)}" for k, p in params.items()
             if k in checkpoint.state_dict and checkpoint.state_dict[k].shape != p.shape]
    if missing or unexpected or wrong:
        raise LLCInputError(f"this checkpoint is not of the same model as the first: missing {few(missing)}, "
                            f"unexpected {few(unexpected)}, shape mismatch {few(wrong)}")
    return {k: checkpoint.state_dict[k].detach().float() for k in params}


def check_model_accepts(module: nn.Module, inputs: Tensor) -> Tensor:
    """Run the model on 2 and 3 rows; a torch.export program with a fixed batch size fails here with
    a message that says how to export it with a dynamic batch dimension. Integer inputs are token ids
    for a model that embeds them, and features (as floats) for one that fails on integers."""
    if isinstance(module, LanguageModelLogits):
        check_token_inputs(module, inputs)
    elif not inputs.is_floating_point() and datafiles.takes_float_inputs(module, inputs[:2]):
        inputs = inputs.float()
    outputs = None
    for rows in (2, 3):
        try:
            with torch.no_grad():
                outputs = module(inputs[:rows].float() if inputs.is_floating_point() else inputs[:rows])
        except Exception as err:
            text = first_line(err)
            if rows == 3 or "guard" in text.lower() or "expected input" in text.lower():
                raise LLCInputError(
                    f"the model fails on a batch of {rows} rows of shape {tuple(inputs.shape[1:])} ({text}). If it is a "
                    "torch.export program, export it with a dynamic batch dimension: torch.export.export(model, (x,), "
                    "dynamic_shapes=({0: torch.export.Dim('batch')},)); else check that the data's columns match "
                    "the model's first layer") from None
            integers = "" if inputs.is_floating_point() else (
                f" (the inputs are integers, {str(inputs.dtype).replace('torch.', '')}: token ids for a model that embeds "
                "them; save features as floats)")
            raise LLCInputError(f"the model cannot take inputs of shape {tuple(inputs.shape[1:])} per sample ({text}): "
                                f"check that the data's columns match the model's first layer{integers}") from None
    return outputs


# ====================================================================== the zoo kind "checkpoint"


def checkpoint_problem(model_config, data_config):
    """The Problem of ModelConfig(kind="checkpoint", path, architecture, activation) and its data."""
    if not model_config.path:
        raise LLCInputError("model kind \"checkpoint\" needs model.path: the weights file (.safetensors, .pt or .pt2), "
                            "or a Hugging Face model folder or zip")
    checkpoint = load_checkpoint(model_config.path)
    module, spec = model_from_checkpoint(checkpoint, model_config.architecture, model_config.activation)
    dataset = datafiles.dataset_for(data_config)
    check_model_accepts(module, dataset.inputs)
    datafiles.check_fits(module, dataset)
    info = {"format": checkpoint.format, "architecture": spec, "data": dataset.describe(), "notes": checkpoint.notes}
    if spec is not None:
        info["architecture_text"] = describe_architecture(spec)
    elif isinstance(module, LanguageModelLogits):
        info["architecture_text"] = module.describe()
    return Problem(module, dataset.inputs, dataset.targets, loss=dataset.loss, noise_scale=data_config.noise_scale,
                   truth=None, sampler_defaults=dict(defaults.CHECKPOINT_SAMPLER), info=info)
