"""Hugging Face model folders (`save_pretrained`) and zips of them, loaded without running code from them.

What is read: `config.json` and the weights, nothing else (tokenizer files, `generation_config.json`,
a Trainer's `training_args.bin` or `optimizer.pt` are left unread).

- The architecture comes from an allow-list (`ARCHITECTURES`): the config's `model_type` and
  `architectures` name a class of the `transformers` library itself, built from the parsed JSON with
  that class's own config class (`from_dict`). A config with `auto_map` (code shipped with the model,
  `trust_remote_code`) or any other architecture is refused; a `.pt2` from `torch.export` is the way
  to bring a custom architecture. Nothing is fetched from the Hub (HF_HUB_OFFLINE is set, no
  `from_pretrained`).
- The weights come from `model.safetensors` (or its shards) through the safetensors library; a folder
  with only `pytorch_model.bin` (or its shards) is read with `torch.load(weights_only=True)`, the same
  loader as a `.pt` state dict, which refuses any pickle that needs more than tensors.
- Sizes are bounded before anything is built: the config's layer count must match the layers in the
  weights, the model is first built on the meta device (no memory) and its tensor names and shapes
  compared with the file's, and only then built for real and loaded with `load_state_dict(strict=True)`.

`transformers` is an optional dependency (requirements-hf.txt) imported only here, inside the loader.
The loaded model is wrapped in `LanguageModelLogits`: forward(input_ids (N, T) int64) → logits (N, T, V).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from torch import Tensor, nn

from llc_core.errors import LLCInputError
from llc_core.files import safe_read
from llc_core.files.safe_read import (HF_CONFIG_NAME, HF_SHARD_PATTERN, few, first_line, load_safetensors,
                                      read_limited, read_zip_members, sniff, too_large, torch_load_weights_only,
                                      zip_member_is_junk, zip_names)

INSTALL_HINT = "pip install -r requirements-hf.txt"
MAX_CONFIG_BYTES = 2**20  # a config.json is a few KiB; anything far larger is not one
# Config keys that point at code or at libraries beyond transformers: code shipped with the model
# (trust_remote_code), custom pipelines, quantised weights (bitsandbytes, GPTQ kernels).
REFUSED_CONFIG_KEYS = ("auto_map", "custom_pipelines", "quantization_config")


@dataclass(frozen=True)
class Architecture:
    """One allowed architecture: the transformers classes that build it, and what its inputs may be."""

    model_type: str
    config_class: str
    model_class: str
    causal: bool  # a causal LM takes use_cache; an encoder (BERT) does not
    positions_key: str | None  # the config key bounding T (learned position embeddings); None for RoPE
    # Tensors of other heads that checkpoints of this family carry and this model does not use
    # (bert-base-uncased is a BertForPreTraining: pooler and next-sentence head).
    unused_prefixes: tuple[str, ...] = ()


ARCHITECTURES = {a.model_type: a for a in (
    Architecture("gpt2", "GPT2Config", "GPT2LMHeadModel", causal=True, positions_key="n_positions"),
    Architecture("llama", "LlamaConfig", "LlamaForCausalLM", causal=True, positions_key=None),
    Architecture("mistral", "MistralConfig", "MistralForCausalLM", causal=True, positions_key=None),
    Architecture("qwen2", "Qwen2Config", "Qwen2ForCausalLM", causal=True, positions_key=None),
    Architecture("bert", "BertConfig", "BertForMaskedLM", causal=False, positions_key="max_position_embeddings",
                 unused_prefixes=("bert.pooler.", "cls.seq_relationship.")),
)}
SUPPORTED_TEXT = ", ".join(f"{a.model_class} ({a.model_type})" for a in ARCHITECTURES.values())
CUSTOM_HINT = ("for another architecture, export the model with torch.export and upload the .pt2: "
               "torch.export.save(torch.export.export(model, (input_ids,), dynamic_shapes=({0: torch.export.Dim('batch')},)), "
               "'model.pt2')")

# Buffers older or newer transformers versions kept in state dicts: constants every model rebuilds
# (GPT-2's causal mask, BERT's position ids, rotary frequencies), never parameters.
REBUILT_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias", "embeddings.position_ids", "embeddings.token_type_ids",
                           "rotary_emb.inv_freq", "rotary_emb.original_inv_freq")
LAYER_INDEX = re.compile(r"(?:^|\.)(?:h|layers|layer)\.(\d+)\.")
# Names older checkpoints used for a LayerNorm's weight and bias (the original BERT release).
LEGACY_SUFFIXES = {".gamma": ".weight", ".beta": ".bias"}


class LanguageModelLogits(nn.Module):
    """A Hugging Face model as forward(input_ids (N, T) int64) → logits (N, T, V).

    No cache and no attention mask (every sequence is full length), so the forward pass is a pure
    function of the parameters and the input ids, as torch.func.functional_call + vmap over chains
    need. The attributes besides `model` are fixed at load time and only describe it.
    """

    def __init__(self, model: nn.Module, *, architecture: Architecture, vocab_size: int, max_positions: int | None):
        super().__init__()
        self.model = model
        self.architecture = architecture
        self.vocab_size = vocab_size
        self.max_positions = max_positions

    def forward(self, input_ids: Tensor) -> Tensor:
        if self.architecture.causal:
            return self.model(input_ids=input_ids, use_cache=False, return_dict=True).logits
        return self.model(input_ids=input_ids, return_dict=True).logits

    def describe(self) -> str:
        layers = getattr(self.model.config, "num_hidden_layers", "?")
        count = sum(p.numel() for p in self.parameters())
        return (f"{self.architecture.model_class} ({self.architecture.model_type}): {layers} layers, vocabulary "
                f"{self.vocab_size}, {count:,} parameters")


@dataclass
class ModelFiles:
    """The files of one model folder that are read: config.json and the weights, by file name."""

    config: bytes
    weights: dict[str, bytes]
    ignored: list[str] = field(default_factory=list)


# ====================================================================== the files


def is_model_directory(source: Any) -> bool:
    return isinstance(source, (str, os.PathLike)) and Path(source).is_dir()


def choose_weight_files(names: list[str]) -> list[str]:
    """The weight files to read, in the order of preference of `read_weights`: model.safetensors,
    else its shards and index, else pytorch_model.bin, else its shards and index (a folder that has
    both formats, as older Hub repositories do, is read once, as safetensors)."""
    for whole, suffix in (("model.safetensors", ".safetensors"), ("pytorch_model.bin", ".bin")):
        if whole in names:
            return [whole]
        if f"{whole}.index.json" in names:
            return [f"{whole}.index.json"] + [n for n in names if HF_SHARD_PATTERN.match(n) and n.endswith(suffix)]
    return []


def read_model_directory(path: str | os.PathLike) -> ModelFiles:
    """config.json and the weight files of a model folder (not its subfolders), each size-bounded."""
    folder = Path(path)
    try:
        names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    except OSError as err:
        raise LLCInputError(f"cannot read the folder {str(path)!r}: {err.strerror}; check the path") from None
    if HF_CONFIG_NAME not in names:
        raise LLCInputError(f"the folder {str(path)!r} has no config.json: a Hugging Face model folder holds config.json "
                            "and model.safetensors (model.save_pretrained(folder, safe_serialization=True))")
    config = read_limited(folder / HF_CONFIG_NAME, "config.json", MAX_CONFIG_BYTES)
    total, weights = 0, {}
    for name in choose_weight_files(names):
        body = read_limited(folder / name, name)
        total += len(body)
        if total > _max_bytes():
            raise LLCInputError(_too_large_text(total))
        weights[name] = body
    return ModelFiles(config, weights, [n for n in names if n != HF_CONFIG_NAME and n not in weights])


def read_model_zip(data: bytes) -> ModelFiles:
    """config.json and the weight files of the one model folder in a zip (at its top or in one subfolder)."""
    names = [n for n in zip_names(data) if not n.endswith("/") and not zip_member_is_junk(n)]
    configs = [n for n in names if PurePosixPath(n).name == HF_CONFIG_NAME]
    if len(configs) != 1:
        raise LLCInputError(f"the zip holds {len(configs)} config.json files ({', '.join(configs[:4])}): zip one "
                            "model folder (config.json and model.safetensors), one model per zip")
    folder = str(PurePosixPath(configs[0]).parent)
    prefix = "" if folder == "." else folder + "/"
    beside = [n[len(prefix):] for n in names if n.startswith(prefix) and "/" not in n[len(prefix):]]
    wanted = {configs[0], *(prefix + n for n in choose_weight_files(beside))}
    members = read_zip_members(data, "zip of a model folder", wanted.__contains__)
    config = members.pop(configs[0])
    if len(config) > MAX_CONFIG_BYTES:
        raise LLCInputError(f"the zip's config.json is {len(config):,} bytes: not a model config (a few KiB)")
    weights = {name[len(prefix):]: body for name, body in members.items()}
    ignored = [n[len(prefix):] for n in names if n.startswith(prefix) and n != configs[0] and n[len(prefix):] not in weights]
    return ModelFiles(config, weights, ignored)


def _max_bytes() -> int:
    return safe_read.MAX_FILE_BYTES  # read at call time: tests lower the limit


def _too_large_text(size: int) -> str:
    return too_large("model's weights", size, _max_bytes())


# ====================================================================== the config


def parse_config(body: bytes) -> tuple[dict[str, Any], Architecture, list[str]]:
    """The config as a dict, its allowed architecture, and notes; refuses code and unknown architectures."""
    try:
        raw = json.loads(body.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise LLCInputError(f"config.json is not valid JSON ({first_line(err)}): save the model again with "
                            "save_pretrained") from None
    if not isinstance(raw, dict):
        raise LLCInputError("config.json is not a JSON object: save the model again with save_pretrained")
    refused = [key for key in REFUSED_CONFIG_KEYS if raw.get(key)]
    if refused:
        raise LLCInputError(
            f"refused config.json: it has {', '.join(refused)}, which would load code or libraries shipped with or "
            f"named by the model (nothing was run). Supported: {SUPPORTED_TEXT}, built by transformers itself; "
            f"{CUSTOM_HINT}")
    model_type = raw.get("model_type")
    if model_type not in ARCHITECTURES:
        shown = f"model_type {model_type!r}" if model_type else "no model_type"
        raise LLCInputError(f"config.json has {shown}: supported Hugging Face architectures are {SUPPORTED_TEXT}; "
                            f"{CUSTOM_HINT}")
    architecture = ARCHITECTURES[model_type]
    named = raw.get("architectures")
    notes = []
    if named is None:
        notes.append(f"config.json names no architectures: built {architecture.model_class}, the {model_type} model this tool supports")
    elif named != [architecture.model_class]:
        raise LLCInputError(f"config.json's architectures {named!r} are not supported for model_type {model_type!r}: "
                            f"supported are {SUPPORTED_TEXT} (one per model); {CUSTOM_HINT}")
    return raw, architecture, notes


# ====================================================================== the weights


def read_weights(files: ModelFiles) -> tuple[dict[str, Tensor], list[str]]:
    """The state dict in the weight files: model.safetensors (or its shards), else pytorch_model.bin
    (or its shards) through torch.load(weights_only=True); a state dict of float32 tensors."""
    if "model.safetensors" in files.weights:
        names, loader = ["model.safetensors"], "safetensors"
    elif "model.safetensors.index.json" in files.weights:
        names, loader = _shards(files, "model.safetensors.index.json"), "safetensors"
    elif "pytorch_model.bin" in files.weights:
        names, loader = ["pytorch_model.bin"], "torch"
    elif "pytorch_model.bin.index.json" in files.weights:
        names, loader = _shards(files, "pytorch_model.bin.index.json"), "torch"
    else:
        raise LLCInputError("the model folder has config.json but no weights (model.safetensors): save the model with "
                            "model.save_pretrained(folder, safe_serialization=True) and upload the folder, or a zip of it")
    state: dict[str, Tensor] = {}
    for name in names:
        for key, value in _read_weight_file(files.weights[name], name, loader).items():
            if key in state:
                raise LLCInputError(f"tensor {key!r} is in two weight shards: save the model again with save_pretrained")
            state[key] = value
    notes = [f"weights read from {', '.join(names)}" + (" with torch.load(weights_only=True)" if loader == "torch" else "")]
    cast = sorted({str(v.dtype).replace("torch.", "") for v in state.values() if v.is_floating_point() and v.dtype != torch.float32})
    if cast:
        notes.append(f"{'/'.join(cast)} weights converted to float32")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, notes


def _shards(files: ModelFiles, index_name: str) -> list[str]:
    try:
        index = json.loads(files.weights[index_name])
        shard_names = sorted(set(index["weight_map"].values()))
    except (ValueError, RecursionError, KeyError, TypeError, AttributeError):  # JSONDecodeError is a ValueError
        raise LLCInputError(f"{index_name} is not a valid shard index (a JSON object with a weight_map): save "
                            "the model again with save_pretrained") from None
    bad = [n for n in shard_names if not isinstance(n, str) or not HF_SHARD_PATTERN.match(n)]
    if bad:
        raise LLCInputError(f"{index_name} lists shard files {bad[:3]!r} that are not shard names of this folder "
                            "(model-00001-of-00002.safetensors, ...): save the model again with save_pretrained")
    missing = [n for n in shard_names if n not in files.weights]
    if missing:
        raise LLCInputError(f"weight shard(s) {', '.join(missing[:4])} listed in {index_name} are missing: upload "
                            "every shard with the index")
    return shard_names


def _read_weight_file(body: bytes, name: str, loader: str) -> dict[str, Tensor]:
    if loader == "safetensors":
        if sniff(body) != "safetensors":
            raise LLCInputError(f"{name} is {sniff(body)}, not a safetensors file: save the model again with save_pretrained")
        return load_safetensors(body, name)
    obj = torch_load_weights_only(body, name)
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise LLCInputError(f"{name} is not a state dict of tensors: save the model with "
                            "model.save_pretrained(folder, safe_serialization=True)")
    return {str(k): v for k, v in obj.items()}


# ====================================================================== the model


def import_transformers():
    """The transformers module, offline; one LLCInputError naming the install when it is missing."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # this tool never downloads: fail rather than reach the Hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise LLCInputError("loading a Hugging Face model needs the transformers library, which is not installed: "
                            f"{INSTALL_HINT}") from None
    return transformers


def build_model(raw_config: dict[str, Any], architecture: Architecture,
                state_dict: dict[str, Tensor]) -> tuple[LanguageModelLogits, list[str]]:
    """The allowed architecture built from the config, its weights the file's (see the module docstring)."""
    transformers = import_transformers()
    _check_saved_version(raw_config.get("transformers_version"), transformers.__version__)
    config_class = getattr(transformers, architecture.config_class)
    model_class = getattr(transformers, architecture.model_class)
    try:
        # eager attention: plain operators, which vmap and forward-mode AD (the curvature at w*) handle;
        # the fused SDPA kernels have no forward-mode derivative on CPU
        config = config_class.from_dict(raw_config, attn_implementation="eager")
    except Exception as err:  # transformers raises ValueError, TypeError, KeyError... for a bad config
        raise LLCInputError(f"config.json does not make a valid {architecture.config_class} ({first_line(err)}): "
                            "save the model again with save_pretrained") from None
    config.use_cache = False
    _check_layer_count(config, state_dict)
    with torch.device("meta"):  # names, shapes and ties without allocating a byte
        skeleton = _construct(model_class, config)
    state_dict, notes = standard_names(state_dict, skeleton, architecture)
    state_dict, own_buffers, tie_notes = fit_state_dict(skeleton, state_dict)
    notes += tie_notes
    model = _construct(model_class, config)
    built = model.state_dict()
    state_dict.update({name: built[name] for name in own_buffers})
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as err:  # fit_state_dict has matched names and shapes; this is a last guard
        raise LLCInputError(f"the weights do not load into the model ({first_line(err)}): upload the config.json "
                            "saved with these weights") from None
    vocab_size = int(config.vocab_size)
    max_positions = int(getattr(config, architecture.positions_key)) if architecture.positions_key else None
    module = LanguageModelLogits(model, architecture=architecture, vocab_size=vocab_size, max_positions=max_positions)
    return module.eval(), notes


def _check_saved_version(saved: Any, installed: str) -> None:
    """Refuse a config from a newer major version of transformers than the one installed: an older
    version ignores keys it does not know and would build another function (transformers 5 keeps
    Llama's rope_theta in rope_parameters, which 4.x reads as the default 10000)."""
    def major(version: Any) -> int | None:
        head = str(version).split(".")[0]
        return int(head) if head.isdigit() else None

    if major(saved) is not None and major(installed) is not None and major(saved) > major(installed):
        raise LLCInputError(f"config.json was saved by transformers {saved}, newer than the installed {installed}, which "
                            f"would misread it: upgrade transformers (pip install -U -r requirements-hf.txt)")


def _construct(model_class, config) -> nn.Module:
    try:
        return model_class(config)
    except Exception as err:
        raise LLCInputError(f"config.json cannot build a {model_class.__name__} ({first_line(err)}): check its sizes "
                            "(hidden size divisible by the heads, ...) or save the model again") from None


def _check_layer_count(config, state_dict: dict[str, Tensor]) -> None:
    """A config that asks for more layers than the weights hold is refused before building anything:
    building thousands of layers, even on the meta device, takes long."""
    layers = getattr(config, "num_hidden_layers", None)
    indices = {int(m.group(1)) for key in state_dict for m in [LAYER_INDEX.search(key)] if m}
    held = max(indices) + 1 if indices else 0
    if not isinstance(layers, int) or layers != held:
        raise LLCInputError(f"config.json says {layers} layers but the weights hold {held}: upload the config.json "
                            "saved with these weights")


def standard_names(file_state: dict[str, Tensor], skeleton: nn.Module,
                   architecture: Architecture) -> tuple[dict[str, Tensor], list[str]]:
    """The file's tensors under the names the model class uses, as from_pretrained would read them:
    names saved from the base model (GPT-2's "h.0..." for "transformer.h.0..."), the original BERT's
    gamma/beta, and other heads' tensors (`Architecture.unused_prefixes`) left out."""
    expected = set(skeleton.state_dict())
    prefix = getattr(skeleton, "base_model_prefix", "") + "."
    state, renamed, legacy, unused = {}, 0, 0, []
    for key, value in file_state.items():
        name = key
        if name not in expected and prefix + name in expected and prefix + name not in file_state:
            name, renamed = prefix + name, renamed + 1
        for old, new in LEGACY_SUFFIXES.items():
            if name not in expected and name.endswith(old) and name[: -len(old)] + new in expected:
                name, legacy = name[: -len(old)] + new, legacy + 1
        if name not in expected and name.startswith(architecture.unused_prefixes):
            unused.append(name)
            continue
        state[name] = value
    notes = []
    if renamed:
        notes.append(f"{renamed} tensor names saved without the {prefix!r} prefix (from the base model) read under it")
    if legacy:
        notes.append(f"{legacy} LayerNorm gamma/beta tensors read as weight/bias")
    if unused:
        notes.append(f"tensors of heads {architecture.model_class} does not have, not used: {few(sorted(unused))}")
    return state, notes


def fit_state_dict(skeleton: nn.Module, file_state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str], list[str]]:
    """The file's tensors under every name of the model's state dict, for load_state_dict(strict=True);
    the buffers the model makes itself, which the caller takes from the built model; and notes.

    Tied weights (GPT-2's lm_head.weight is transformer.wte.weight when tie_word_embeddings is set)
    are one parameter that appears under several names; save_pretrained stores it once. The file's
    copy is used for every name, and two differing copies are refused (the config and weights
    disagree about the tie). Constant buffers (masks, position ids, rotary frequencies) are the
    model's own: some transformers versions stored them, others do not.
    """
    expected = skeleton.state_dict()
    state, notes = dict(file_state), []
    for group in _tied_groups(skeleton):
        present = [name for name in group if name in state]
        if not present:
            continue
        source = present[0]
        for name in present[1:]:
            if not torch.equal(state[name], state[source]):
                raise LLCInputError(f"{name} and {source} differ in the weights, but config.json ties them "
                                    "(tie_word_embeddings): set \"tie_word_embeddings\": false in config.json if they are separate")
        for name in group:
            state[name] = state[source]
        notes.append(f"{', '.join(n for n in group if n != source)} tied to {source}: one parameter, sampled once")
    dropped = [k for k in state if k not in expected and k.endswith(REBUILT_BUFFER_SUFFIXES)]
    for key in dropped:
        del state[key]
    buffers = {name for name, _ in skeleton.named_buffers()}
    own_buffers = [k for k in expected if k not in state and k in buffers]
    if dropped or own_buffers:
        notes.append(f"constant buffers made by the model, not read: {few(dropped + own_buffers)}")
    missing = [k for k in expected if k not in state and k not in own_buffers]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}" for k in expected
             if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        parts = [f"{label} {few(items)}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)) if items]
        raise LLCInputError("the weights do not fit the model config.json describes: " + "; ".join(parts)
                            + ". Upload the config.json saved with these weights")
    return state, own_buffers, notes


def _tied_groups(module: nn.Module) -> list[list[str]]:
    """Names that share one parameter, the name named_parameters() keeps first."""
    by_id: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        by_id.setdefault(id(param), []).append(name)
    return [names for names in by_id.values() if len(names) > 1]


# ====================================================================== entry points


def load_huggingface(source: bytes | str | os.PathLike) -> tuple[LanguageModelLogits, list[str]]:
    """The model in a Hugging Face folder (a path) or a zip of one (bytes or a path), and notes."""
    files = read_model_directory(source) if is_model_directory(source) else read_model_zip(read_limited(source, "checkpoint"))
    raw_config, architecture, notes = parse_config(files.config)
    state_dict, weight_notes = read_weights(files)
    module, model_notes = build_model(raw_config, architecture, state_dict)
    ignored = [n for n in files.ignored if not n.startswith(".")]
    unread = [f"not read: {few(ignored)}"] if ignored else []
    return module, [module.describe(), *notes, *weight_notes, *model_notes, *unread]


def check_token_inputs(module: LanguageModelLogits, inputs: Tensor) -> None:
    """Token ids for the model: integers of shape (N, T), within its vocabulary and position range."""
    if inputs.is_floating_point() or inputs.ndim != 2:
        raise LLCInputError(f"a language model takes integer token ids of shape (sequences, T); the inputs are "
                            f"{str(inputs.dtype).replace('torch.', '')} {tuple(inputs.shape)}: save them as int64 "
                            "(np.savez(path, tokens=ids.astype(np.int64)), or x and y)")
    low, high = int(inputs.min()), int(inputs.max())
    if low < 0 or high >= module.vocab_size:
        raise LLCInputError(f"token ids must lie in [0, {module.vocab_size - 1}] for this model's vocabulary of "
                            f"{module.vocab_size}; found ids in [{low}, {high}]: tokenize with the model's own tokenizer")
    if module.max_positions is not None and inputs.shape[1] > module.max_positions:
        raise LLCInputError(f"sequences of {inputs.shape[1]} tokens are longer than the model's {module.max_positions} "
                            "positions: cut them to at most that length")
