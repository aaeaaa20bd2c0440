"""Datasets from files and teachers: every format, key choice, loss checks and bad input, with real files."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes
from torch import nn

from llc_core import DataConfig, LLCInputError
from llc_core.files import datafiles


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


X = np.arange(12, dtype=np.float32).reshape(6, 2)
Y = np.array([0, 1, 2, 1, 0, 2])


@pytest.mark.parametrize("data", [
    lambda: npz_bytes(x=X, y=Y),
    lambda: npz_bytes(inputs=X, targets=Y),
    lambda: safetensors_bytes({"X": torch.from_numpy(X), "Y": torch.from_numpy(Y)}),
    lambda: torch_bytes({"features": torch.from_numpy(X), "labels": torch.from_numpy(Y)}),
    lambda: torch_bytes((torch.from_numpy(X), torch.from_numpy(Y))),
    lambda: b"a,b,label\n" + b"\n".join(f"{r[0]},{r[1]},{t}".encode() for r, t in zip(X, Y)),
])
def test_every_format_gives_the_same_dataset(data):
    dataset = datafiles.load_dataset(data(), loss="cross_entropy")
    assert torch.equal(dataset.inputs, torch.from_numpy(X))
    assert torch.equal(dataset.targets, torch.from_numpy(Y)) and dataset.targets.dtype == torch.long


def test_gaussian_targets_become_a_column_and_keys_can_be_chosen():
    data = npz_bytes(a=X, b=Y.astype(float), c=X[:, :1])
    with pytest.raises(LLCInputError, match="cannot tell inputs from targets among the arrays a, b, c"):
        datafiles.load_dataset(data)
    dataset = datafiles.load_dataset(data, inputs_key="a", targets_key="b")
    assert dataset.targets.shape == (6, 1) and "reshaped to a column" in dataset.notes[0]
    with pytest.raises(LLCInputError, match="targets_key 'z' is not in the file"):
        datafiles.load_dataset(data, inputs_key="a", targets_key="z")


def test_csv_target_columns_and_errors():
    text = b"x1,x2,y1,y2\n1,2,3,4\n5,6,7,8\n9,10,11,12\n"
    dataset = datafiles.load_dataset(text, target_columns=["y1", "y2"])
    assert dataset.inputs.shape == (3, 2) and dataset.targets.tolist() == [[3, 4], [7, 8], [11, 12]]
    with pytest.raises(LLCInputError, match="choose the target column"):
        datafiles.load_dataset(text)
    cases = {
        b"1,2,3\n4,5,6\n7,8,9\n": "first row is numbers",
        b"a,b,y\n1,2,3\n4,five,6\n": "line 3, column 'b': 'five' is not a number",
        b"a,b,y\n1,2,3\n4,5\n": "line 3 has 2 cells",
        b"a,a,y\n1,2,3\n4,5,6\n": "repeated column names",
        b"a,y\n1,2\n": "at least 2 data rows",
        b"\xff\xfe\x00bad": "an unknown binary file",
    }
    for data, message in cases.items():
        with pytest.raises(LLCInputError, match=message):
            datafiles.load_dataset(data)


def test_bad_data_files(tmp_path):
    victim = tmp_path / "pwned.txt"

    class Payload:
        def __reduce__(self):
            return (open, (str(victim), "w"))

    cases = {
        "object npz": (npz_bytes(x=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2)), "Python objects"),
        "evil pt": (torch_bytes({"x": torch.zeros(2), "y": Payload()}), r"refused .*open"),
        "raw pickle": (pickle.dumps({"x": Payload()}), r"refused .*open"),
        "truncated npz": (npz_bytes(x=X, y=Y)[:100], "corrupt or truncated"),
        "png": (b"\x89PNG\r\n\x1a\n\x00\x00", "a PNG image"),
        "empty": (b"", "empty"),
        "rows differ": (npz_bytes(x=X, y=Y[:4]), r"same number of rows"),
        "nan": (npz_bytes(x=np.where(X > 10, np.nan, X), y=Y), "NaN/inf"),
        "strings": (npz_bytes(x=np.array(["a", "b"]), y=np.zeros(2)), "must be numbers"),
        "no tensors": (torch_bytes({"step": 1}), "without tensors"),
    }
    for name, (data, message) in cases.items():
        with pytest.raises(LLCInputError, match=message):
            datafiles.load_dataset(data)
    assert not victim.exists()
    with pytest.raises(LLCInputError, match="integer class labels, but the targets have fractions"):
        datafiles.load_dataset(npz_bytes(x=X, y=Y + 0.5), loss="cross_entropy")


def test_model_output_is_checked_against_the_targets_for_the_loss():
    regression = datafiles.make_dataset(X, Y.astype(float), "gaussian")
    classes = datafiles.make_dataset(X, Y, "cross_entropy")
    with pytest.raises(LLCInputError, match=r"output has shape \(4, 3\) but targets have shape \(4, 1\)"):
        datafiles.check_fits(nn.Linear(2, 3), regression)
    datafiles.check_fits(nn.Linear(2, 1), regression)
    datafiles.check_fits(nn.Linear(2, 3), classes)
    with pytest.raises(LLCInputError, match=r"labels must lie in \[0, 1\]"):  # label 2 is beyond a 2-class model
        datafiles.check_fits(nn.Linear(2, 2), classes)


def test_teacher_data_and_the_data_config():
    dataset = datafiles.dataset_for(DataConfig(n=50, teacher={"kind": "mlp", "input_dim": 3, "task": "classification"}))
    assert dataset.inputs.shape == (50, 3) and dataset.loss == "cross_entropy" and dataset.source == "teacher"
    with pytest.raises(LLCInputError, match="labels are for the gaussian loss"):
        datafiles.dataset_for(DataConfig(n=50, teacher={"kind": "mlp"}, loss="cross_entropy"))
    with pytest.raises(LLCInputError, match="needs data"):
        datafiles.dataset_for(DataConfig())
    with pytest.raises(LLCInputError, match="unknown key"):
        datafiles.dataset_for(DataConfig(teacher={"kind": "mlp", "depth": 3}))


# ====================================================================== integer token data


TOKENS = np.random.default_rng(0).integers(0, 50, size=(6, 9))


@pytest.mark.parametrize("data", [
    lambda: npz_bytes(x=TOKENS[:, :-1], y=TOKENS[:, 1:]),
    lambda: safetensors_bytes({"x": torch.from_numpy(TOKENS[:, :-1]).contiguous(),
                               "y": torch.from_numpy(TOKENS[:, 1:]).contiguous()}),
    lambda: torch_bytes((torch.from_numpy(TOKENS[:, :-1]), torch.from_numpy(TOKENS[:, 1:]))),
    lambda: npz_bytes(tokens=TOKENS),
    lambda: npz_bytes(tokens=TOKENS.astype(np.uint16)),  # the usual dtype of tokenized corpora
    lambda: torch_bytes({"tokens": torch.from_numpy(TOKENS)}),
])
def test_token_ids_stay_int64_and_a_tokens_array_is_split(data):
    dataset = datafiles.load_dataset(data(), loss="next_token")
    assert dataset.inputs.dtype == dataset.targets.dtype == torch.int64
    assert torch.equal(dataset.inputs, torch.from_numpy(TOKENS[:, :-1]))
    assert torch.equal(dataset.targets, torch.from_numpy(TOKENS[:, 1:]))
    assert dataset.n == 6 and dataset.inputs.shape == (6, 8)


def test_a_tokens_file_defaults_to_the_next_token_loss_and_refuses_others():
    dataset = datafiles.load_dataset(npz_bytes(tokens=TOKENS, mask=np.ones(6)))
    assert dataset.loss == "next_token" and dataset.inputs_key == "tokens[:, :-1]"
    assert "tokens (6, 9) split" in dataset.notes[0] and "arrays not used: mask" in dataset.notes[1]
    with pytest.raises(LLCInputError, match="use the next_token loss, not gaussian"):
        datafiles.load_dataset(npz_bytes(tokens=TOKENS), loss="gaussian")
    for bad in (TOKENS.astype(float) + 0.5, TOKENS[:, :1], TOKENS[0]):
        with pytest.raises(LLCInputError, match=r"must hold integer token ids of shape \(sequences, T \+ 1\)"):
            datafiles.load_dataset(npz_bytes(tokens=bad))
    with pytest.raises(LLCInputError, match="next_token loss needs integer token ids, but the targets have fractions"):
        datafiles.load_dataset(npz_bytes(x=TOKENS[:, :-1], y=TOKENS[:, 1:] + 0.5), loss="next_token")
    # named keys take other arrays even when a tokens array is there
    chosen = datafiles.load_dataset(npz_bytes(tokens=TOKENS, a=X, b=Y), inputs_key="a", targets_key="b",
                                    loss="cross_entropy")
    assert chosen.inputs_key == "a" and chosen.inputs.dtype == torch.float32


class TinyLanguageModel(nn.Module):
    """Embedding → Linear: logits (n, T, vocabulary) from token ids (n, T)."""

    def __init__(self, vocab: int = 50):
        super().__init__()
        self.embed, self.out = nn.Embedding(vocab, 4), nn.Linear(4, vocab)

    def forward(self, ids):
        return self.out(self.embed(ids))


def test_token_targets_are_checked_over_the_whole_dataset():
    targets = TOKENS[:, 1:].copy()
    targets[5, 3] = 50  # beyond a vocabulary of 50, in a row check_output_matches does not see
    dataset = datafiles.make_dataset(TOKENS[:, :-1], targets, "next_token")
    datafiles.check_fits(TinyLanguageModel(51), dataset)
    with pytest.raises(LLCInputError, match=r"next_token loss: target tokens must lie in \[0, 49\]"):
        datafiles.check_fits(TinyLanguageModel(50), dataset)


def test_integer_features_become_floats_for_a_model_that_takes_floats():
    dataset = datafiles.make_dataset(np.arange(12).reshape(6, 2), Y, "cross_entropy")
    assert dataset.inputs.dtype == torch.int64
    datafiles.check_fits(nn.Linear(2, 3), dataset)  # a Linear layer fails on integers and runs on floats
    assert dataset.inputs.dtype == torch.float32 and "integer inputs converted to floats" in dataset.notes[-1]
    tokens = datafiles.make_dataset(TOKENS[:, :-1], TOKENS[:, 1:], "next_token")
    datafiles.check_fits(TinyLanguageModel(), tokens)  # an embedding takes them as they are
    assert tokens.inputs.dtype == torch.int64
