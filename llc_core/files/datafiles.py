"""Datasets from files (.npz, .safetensors, .pt with tensors only, .csv with a header) or a zoo teacher.

A file holds named arrays (or CSV columns); the inputs and targets are chosen by name
(`inputs_key`, `targets_key`, or `target_columns` for a CSV), else guessed from the usual names
(x/y, inputs/targets, X/Y, features/labels) when that is unambiguous; a single array named `tokens`
(sequences × (T + 1) token ids) is split for language modelling: inputs tokens[:, :-1], targets
tokens[:, 1:]. The loss decides what the targets must look like: Gaussian wants floats shaped like
the model's output (a 1-D target becomes a column, shape (n, 1)); cross-entropy wants integer class
labels of shape (n,); next_token wants integer token ids of shape (n, T).

Integer inputs stay integers (int64): token ids feed an embedding. A model whose first layer takes
floats (a Linear layer) gets them as floats instead (`check_fits`, `takes_float_inputs`).
"""

from __future__ import annotations

import csv
import io
import math
import os
import tokenize
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llc_core.files import safe_read
from llc_core.files.safe_read import (COMPUTE_FLOATS, clip, few, file_kind, listed, load_safetensors,
                                      plain_tensor_problem, read_limited, torch_load_weights_only, wrong_type_error)
from llc_core.config import DataConfig, ModelConfig, build_config
from llc_core.errors import LLCInputError
from llc_core.losses import LOSS_KINDS, check_output_matches
from llc_core.truth.zoo import build_problem

INPUT_NAMES = ("x", "inputs", "X", "input", "features", "data")
TARGET_NAMES = ("y", "targets", "Y", "target", "labels", "label")
TOKENS_KEY = "tokens"  # one array of token sequences, split into inputs and next-token targets
MAX_NPZ_MEMBERS = 64
# Losses whose targets are integer ids (class labels, or the next token at every position).
INTEGER_TARGET_LOSSES = ("cross_entropy", "next_token")


@dataclass
class Dataset:
    inputs: Tensor
    targets: Tensor
    loss: str = "gaussian"
    source: str = ""  # npz, safetensors, torch, csv or teacher
    inputs_key: str | None = None
    targets_key: str | None = None  # for a CSV, the target columns joined by ","
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.inputs.shape[0])

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "n": self.n, "inputs": list(self.inputs.shape), "targets": list(self.targets.shape),
                "inputs_key": self.inputs_key, "targets_key": self.targets_key, "loss": self.loss, "notes": self.notes}


# ====================================================================== reading named arrays


def read_arrays(source: bytes | str | os.PathLike) -> tuple[str, dict[str, np.ndarray]]:
    """(format, name → array) of a data file; a CSV's arrays are its columns."""
    data = read_limited(source, "data file")
    kind = file_kind(data)
    if kind == "npz":
        return "npz", _npz_arrays(data)
    if kind == "safetensors":
        return "safetensors", {k: tensor_array(k, v) for k, v in load_safetensors(data, "data file").items()}
    if kind == "torch":
        return "torch", _torch_arrays(torch_load_weights_only(data, "data file"))
    if kind == "a text file":
        return "csv", _csv_columns(data)
    raise wrong_type_error(kind, "data file", ".npz, .safetensors, .pt (tensors only) or .csv with a header row")


def _npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
            if len(infos) > MAX_NPZ_MEMBERS or sum(i.file_size for i in infos) > safe_read.MAX_FILE_BYTES:
                raise LLCInputError(f"the .npz unpacks to more than {safe_read.MAX_FILE_BYTES / 2**20:.0f} MiB or "
                                    f"{MAX_NPZ_MEMBERS} arrays: upload a smaller dataset")
            for info in infos:
                _check_npy_header(archive, info)
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except LLCInputError:  # a ValueError too: ours already says what is wrong
        raise
    except MemoryError:  # a claim _check_npy_header could not see through (a compressed member): never a traceback
        raise LLCInputError("the .npz's arrays do not fit in memory: upload a smaller dataset") from None
    except ValueError as err:
        if "pickle" in str(err).lower() or "object" in str(err).lower():
            raise LLCInputError("the .npz holds Python objects (dtype=object), which would need unpickling: "
                                "save numeric arrays, e.g. np.savez(path, x=x.astype(float), y=y)") from None
        raise LLCInputError(f"the .npz is corrupt ({err}): save it again with np.savez") from None
    except (*safe_read.ZIP_ERRORS, KeyError) as err:
        raise LLCInputError(f"the .npz is corrupt or truncated ({safe_read.first_line(err)}): save it again with "
                            "np.savez") from None


def _check_npy_header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Refuse a member that is not an .npy array (np.load would hand back its raw bytes), and, before np.load
    allocates it, an array whose header claims more bytes than its member holds (a header saying shape
    (10^10, 3) in a file of a few bytes would allocate 224 GiB). Told by its bytes, whatever its name."""
    with archive.open(info) as member:
        if member.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
            raise LLCInputError(f"the .npz member {info.filename[:80]!r} is not a NumPy array: save the data with "
                                "np.savez(path, x=inputs, y=targets)")
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, _, dtype = read_header(member, max_header_size=10_000)
        except (ValueError, SyntaxError, TypeError, RecursionError, tokenize.TokenError) as err:  # NumPy parses it
            raise LLCInputError(f"the .npz member {clip(info.filename)!r} has a corrupt array header "
                                f"({safe_read.first_line(err)[:120]}): save it again with np.savez") from None
    if dtype.hasobject:
        return  # np.load(allow_pickle=False) refuses it with its own message
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > info.file_size:
        raise LLCInputError(f"the .npz array {info.filename[:80].removesuffix('.npy')!r} claims shape {tuple(shape)} ({claimed / 2**30:.3g} GiB) "
                            f"but its file holds {info.file_size} bytes: the .npz is corrupt; save it again with np.savez")


def tensor_array(name: str, tensor: Tensor) -> np.ndarray:
    """A tensor from a data file as a NumPy array: a plain dense one, floats NumPy lacks (bfloat16, float8)
    as float32, which holds their values exactly."""
    problem = plain_tensor_problem(tensor) if not tensor.is_complex() else None  # complex: refused as data later
    if problem:
        raise LLCInputError(f"the data array {name[:80]!r} is {problem}: save plain dense tensors of numbers")
    tensor = tensor.detach()
    if tensor.is_floating_point() and tensor.dtype not in COMPUTE_FLOATS or tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # NumPy has no bfloat16 nor float8
    try:
        return tensor.numpy()
    except (TypeError, RuntimeError) as err:
        raise LLCInputError(f"the data array {name[:80]!r} ({str(tensor.dtype).replace('torch.', '')}) cannot be read "
                            f"as numbers ({safe_read.first_line(err)}): save float32, float64 or integer tensors") from None


def _torch_arrays(obj: Any) -> dict[str, np.ndarray]:
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(isinstance(t, Tensor) for t in obj):
        return {"inputs": tensor_array("inputs", obj[0]), "targets": tensor_array("targets", obj[1])}
    if isinstance(obj, dict):
        arrays = {str(k): tensor_array(str(k), v) for k, v in obj.items() if isinstance(v, Tensor)}
        if arrays:
            return arrays
    raise LLCInputError(f"the .pt data file holds a {type(obj).__name__} without tensors: save "
                        "torch.save({'x': inputs, 'y': targets}, path) or a tuple (inputs, targets)")


def _csv_columns(data: bytes) -> dict[str, np.ndarray]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise LLCInputError("the CSV is not UTF-8 text: save it as UTF-8") from None
    try:
        rows = [row for row in csv.reader(io.StringIO(text)) if row and any(cell.strip() for cell in row)]
    except csv.Error as err:  # a field over csv's limit (128 KiB), a NUL byte, ...
        raise LLCInputError(f"the CSV cannot be read ({str(err)[:120]}): save plain comma-separated numbers "
                            "with a header row") from None
    if len(rows) < 3:
        raise LLCInputError("the CSV needs a header row and at least 2 data rows")
    header = [cell.strip() for cell in rows[0]]
    if all(_is_number(cell) for cell in header):
        raise LLCInputError("the CSV's first row is numbers: add a header row naming the columns (e.g. x1,x2,y)")
    if len(set(header)) != len(header) or any(not name for name in header):
        raise LLCInputError(f"the CSV header {few(header)} has empty or repeated column names: name every column once")
    values = np.empty((len(rows) - 1, len(header)))
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise LLCInputError(f"CSV line {line} has {len(row)} cells but the header has {len(header)} columns")
        for column, cell in enumerate(row):
            try:
                values[line - 2, column] = float(cell)
            except ValueError:
                raise LLCInputError(f"CSV line {line}, column {clip(header[column])!r}: {cell[:40]!r}{'…' if len(cell) > 40 else ''} is not a number") from None
    return {name: values[:, i] for i, name in enumerate(header)}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ====================================================================== choosing inputs and targets


def load_dataset(source: bytes | str | os.PathLike, loss: str | None = None, inputs_key: str | None = None,
                 targets_key: str | None = None, target_columns: list[str] | None = None) -> Dataset:
    """The dataset in a file, with inputs and targets chosen by name (or guessed when unambiguous),
    or split from a `tokens` array; `loss` None means next_token for tokens, else gaussian."""
    if loss is not None and loss not in LOSS_KINDS:
        raise LLCInputError(f"unknown loss {loss!r}: use one of {', '.join(LOSS_KINDS)}")
    source_format, arrays = read_arrays(source)
    if source_format == "csv":
        inputs, targets, inputs_key, targets_key = _split_columns(arrays, target_columns)
    elif uses_tokens(list(arrays), inputs_key, targets_key):
        if target_columns is not None:
            raise LLCInputError("target_columns is for CSV files: a tokens array is split into inputs and targets")
        return tokens_dataset(arrays, loss, source_format)
    else:
        if target_columns is not None:
            raise LLCInputError("target_columns is for CSV files: for named arrays give targets_key")
        inputs_key, targets_key = choose_keys(list(arrays), inputs_key, targets_key)
        inputs, targets = arrays[inputs_key], arrays[targets_key]
    return make_dataset(inputs, targets, loss or "gaussian", source_format, inputs_key, targets_key)


def uses_tokens(names: list[str], inputs_key: str | None, targets_key: str | None) -> bool:
    """A `tokens` array is split when it is named as the inputs, or when no keys are given."""
    return TOKENS_KEY in names and targets_key is None and inputs_key in (None, TOKENS_KEY)


def tokens_dataset(arrays: dict[str, np.ndarray], loss: str | None, source: str) -> Dataset:
    """Language-modelling data from one array of token ids, sequences × (T + 1): each sequence's
    first T tokens are the inputs and its last T the targets (the next token at every position)."""
    loss = loss or "next_token"
    if loss != "next_token":
        raise LLCInputError(f"a {TOKENS_KEY!r} array is split into inputs and next-token targets: use the next_token "
                            f"loss, not {loss} (or name inputs_key and targets_key for other arrays)")
    tokens = _as_tensor(arrays[TOKENS_KEY], TOKENS_KEY)
    if tokens.is_floating_point() or tokens.ndim != 2 or tokens.shape[1] < 2:
        raise LLCInputError(f"the {TOKENS_KEY!r} array must hold integer token ids of shape (sequences, T + 1) with "
                            f"T ≥ 1, got {str(tokens.dtype).replace('torch.', '')} {tuple(tokens.shape)}: save "
                            "np.savez(path, tokens=ids.astype(np.int64)), one row per sequence")
    dataset = make_dataset(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), loss, source,
                           f"{TOKENS_KEY}[:, :-1]", f"{TOKENS_KEY}[:, 1:]")
    dataset.notes.append(f"{TOKENS_KEY} {tuple(tokens.shape)} split: inputs are each sequence's first "
                         f"{tokens.shape[1] - 1} tokens, targets the {tokens.shape[1] - 1} after them")
    others = [name for name in arrays if name != TOKENS_KEY]
    if others:
        dataset.notes.append(f"arrays not used: {', '.join(others)}")
    return dataset


def choose_keys(names: list[str], inputs_key: str | None, targets_key: str | None) -> tuple[str, str]:
    for key, what in ((inputs_key, "inputs_key"), (targets_key, "targets_key")):
        if key is not None and key not in names:
            raise LLCInputError(f"{what} {clip(key)!r} is not in the file: its arrays are {listed(names)}")
    inputs_key = inputs_key or _guess(names, INPUT_NAMES, exclude=targets_key)
    targets_key = targets_key or _guess(names, TARGET_NAMES, exclude=inputs_key)
    if inputs_key is None or targets_key is None:
        if len(names) == 2 and (inputs_key or targets_key):
            other = [n for n in names if n != (inputs_key or targets_key)][0]
            inputs_key, targets_key = inputs_key or other, targets_key or other
        else:
            raise LLCInputError(f"cannot tell inputs from targets among the arrays {listed(names)}: "
                                "choose them (inputs_key and targets_key)")
    if inputs_key == targets_key:
        raise LLCInputError(f"inputs and targets are the same array {inputs_key!r}: choose two different ones")
    return inputs_key, targets_key


def _guess(names: list[str], candidates: tuple[str, ...], exclude: str | None) -> str | None:
    found = [c for c in candidates if c in names and c != exclude]
    lowered = {c.lower() for c in found}
    return found[0] if len(lowered) == 1 else None  # x and X both present: ambiguous


def _split_columns(columns: dict[str, np.ndarray], target_columns: list[str] | None):
    names = list(columns)
    if target_columns is None:
        guess = [n for n in names if n in TARGET_NAMES]
        if len(guess) != 1:
            raise LLCInputError(f"choose the target column(s) of the CSV (target_columns): its columns are {listed(names)}")
        target_columns = guess
    if isinstance(target_columns, str):
        target_columns = [c.strip() for c in target_columns.split(",") if c.strip()]
    unknown = [c for c in target_columns if c not in columns]
    if unknown or not target_columns:
        raise LLCInputError(f"target column(s) {few(unknown or target_columns)} not in the CSV: its columns are {listed(names)}")
    input_columns = [n for n in names if n not in target_columns]
    if not input_columns:
        raise LLCInputError("every CSV column is a target: leave at least one column as input")
    inputs = np.stack([columns[n] for n in input_columns], axis=1)
    targets = np.stack([columns[n] for n in target_columns], axis=1)
    return inputs, targets, ",".join(input_columns), ",".join(target_columns)


def make_dataset(inputs: Any, targets: Any, loss: str, source: str = "arrays", inputs_key: str | None = None,
                 targets_key: str | None = None) -> Dataset:
    """Check and convert arrays for `loss`: numeric, finite, one row per sample; float inputs as
    float32 and integer inputs (token ids) as int64; Gaussian targets as float columns, cross-entropy
    targets as integer labels, next_token targets as integer token ids (n, T)."""
    x, y = _as_tensor(inputs, "inputs"), _as_tensor(targets, "targets")
    notes = []
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise LLCInputError(f"inputs {tuple(x.shape)} and targets {tuple(y.shape)} must have the same number of "
                            "rows (first dimension): one row per sample")
    if x.shape[0] < 2:
        raise LLCInputError(f"the dataset has {x.shape[0]} row(s): the estimator needs at least 2")
    for tensor, what in ((x, "inputs"), (y, "targets")):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise LLCInputError(f"the {what} contain {bad} NaN/inf value(s): drop or fill those rows")
        if tensor.dtype == torch.float64:
            beyond = int((~torch.isfinite(tensor.float())).sum())
            if beyond:
                raise LLCInputError(f"the {what} hold {beyond} value(s) beyond float32's range (±3.4e38): rescale "
                                    "the data")
    x = x.float() if x.is_floating_point() else x.long()
    if x.ndim == 1:
        x = x.unsqueeze(1)
    if loss in INTEGER_TARGET_LOSSES:
        y = _integer_targets(y, loss, notes)
    else:
        y = y.float()
        if y.ndim == 1:
            y = y.unsqueeze(1)
            notes.append("1-D targets reshaped to a column (n, 1)")
    return Dataset(x, y, loss, source, inputs_key, targets_key, notes)


def _integer_targets(y: Tensor, loss: str, notes: list[str]) -> Tensor:
    """Class labels (n,) for cross-entropy (a column (n, 1) is flattened), token ids as given for
    next_token; float targets are accepted when they are whole numbers."""
    if loss == "cross_entropy" and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    what = "integer class labels" if loss == "cross_entropy" else "integer token ids"
    if y.is_floating_point():
        if not bool((y == y.round()).all()):
            raise LLCInputError(f"{loss.replace('_', '-') if loss == 'cross_entropy' else 'the next_token loss'} needs "
                                f"{what}, but the targets have fractions: use the Gaussian loss for real-valued targets")
        notes.append(f"float targets converted to {what}")
    return y.long()


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        tensor = value.detach()
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise LLCInputError(f"the {what} have dtype {array.dtype}: they must be numbers")
        if array.dtype.kind in "iu":
            array = array.astype(np.int64, copy=False)  # torch lacks most unsigned types; ids fit in int64
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise LLCInputError(f"the {what} have dtype {tensor.dtype}: they must be real numbers")
    return tensor


def takes_float_inputs(model: nn.Module, rows: Tensor) -> bool:
    """Whether integer inputs are features for this model: it fails on them as integers and runs on
    them as floats (a Linear layer). A model that embeds token ids runs on the integers."""
    with torch.no_grad():
        try:
            model(rows)
            return False
        except Exception:  # a model can raise anything on inputs of the wrong dtype
            pass
        try:
            model(rows.float())
            return True
        except Exception:
            return False


def check_fits(model: nn.Module, dataset: Dataset) -> None:
    """Raise LLCInputError when the model's output cannot be scored against the targets for the loss
    (the label range is checked over the whole dataset, not only the rows tried). Integer inputs
    for a model that takes floats are converted to floats here, with a note."""
    if not dataset.inputs.is_floating_point() and takes_float_inputs(model, dataset.inputs[:2]):
        dataset.inputs = dataset.inputs.float()
        dataset.notes.append("integer inputs converted to floats: the model's first layer takes features, not token ids")
    with torch.no_grad():
        output = model(dataset.inputs[:4])
    try:
        check_output_matches(dataset.loss, output, dataset.targets[:4])
        extremes = torch.stack([dataset.targets.min(), dataset.targets.max()])
        if dataset.loss == "cross_entropy":
            check_output_matches(dataset.loss, output[:1].expand(2, -1), extremes)
        elif dataset.loss == "next_token" and output.ndim == 3:
            check_output_matches(dataset.loss, output[:1, :1].expand(2, 1, -1), extremes.reshape(2, 1))
    except LLCInputError as err:
        raise LLCInputError(f"model and data do not fit for the {dataset.loss} loss: {err}") from None


# ====================================================================== the DataConfig


def dataset_for(data_config) -> Dataset:
    """The dataset a DataConfig describes for model kind "checkpoint": a file (`path`) or a zoo
    teacher (`teacher`: ModelConfig fields of a zoo kind; n, seed and noise_scale as for the zoo)."""
    if data_config.path and data_config.teacher:
        raise LLCInputError("give data.path (a file) or data.teacher (a zoo model), not both")
    if data_config.path:
        return load_dataset(data_config.path, data_config.loss, data_config.inputs_key, data_config.targets_key,
                            data_config.target_columns)
    if data_config.teacher:
        return teacher_dataset(data_config.teacher, data_config.n, data_config.seed, data_config.noise_scale, data_config.loss)
    raise LLCInputError("model kind \"checkpoint\" needs data: data.path (.npz, .safetensors, .pt, .csv) or "
                        "data.teacher (e.g. {\"kind\": \"mlp\", \"input_dim\": 4})")


def teacher_dataset(teacher: dict[str, Any], n: int, seed: int, noise_scale: float = 1.0,
                    loss: str | None = None) -> Dataset:
    """Inputs and labels drawn from a zoo model (its own loss unless `loss` says otherwise)."""
    if not isinstance(teacher, dict) or teacher.get("kind") in (None, "checkpoint"):
        raise LLCInputError(f"data.teacher = {teacher!r} must name a zoo kind, e.g. {{\"kind\": \"mlp\", \"input_dim\": 4}}")
    problem = build_problem(build_config(ModelConfig, teacher, "data.teacher"), DataConfig(n=n, seed=seed, noise_scale=noise_scale))
    loss = loss or problem.loss
    if loss != problem.loss:
        raise LLCInputError(f"the teacher's labels are for the {problem.loss} loss, not {loss}: pick {problem.loss}")
    return make_dataset(problem.inputs, problem.targets, loss, "teacher", teacher.get("kind"), None)
