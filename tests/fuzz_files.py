"""Fuzz driver for tests/test_hardening.py: `python tests/fuzz_files.py SEED COUNT [LIMIT [READERS]]`.

Reads COUNT files made by mutating valid ones (truncation, byte flips, junk, members renamed, huge shapes
declared in .npy and safetensors headers, zip bombs, deep JSON, long CSV fields, tensors of odd kinds)
through the readers of the Checkpoint and Training-run pages (llc_core/files: checkpoint, datafiles,
safe_read, huggingface; and the zip of checkpoints of llc_core/studies/trajectory) named in READERS
(checkpoint,data,trajectory,spec; all by default), in this one process, each under a time limit of LIMIT
seconds (20), and prints one JSON line per failure: a reader that raised anything but LLCInputError, an
LLCInputError whose message is not one clear line, or one that hung. The test runs it under RLIMIT_AS, so
an allocation a header merely claims fails as MemoryError and is reported.
"""

from __future__ import annotations

import io
import json
import random
import signal
import struct
import sys
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
MAX_MESSAGE = 600  # characters of one clear line


# ====================================================================== valid files to start from


def torch_bytes(obj, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def safetensors_bytes(tensors: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()})


def npz_bytes(arrays: dict) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(shape: tuple, descr: str = "<f8", body: bytes = b"\0" * 64, fortran: bool = False,
              header_text: str | None = None, version: bytes = b"\x01\x00") -> bytes:
    header = (header_text or f"{{'descr': {descr!r}, 'fortran_order': {fortran!r}, 'shape': {shape!r}, }}").encode("latin1")
    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    size = len(header).to_bytes(2, "little") if version == b"\x01\x00" else len(header).to_bytes(4, "little")
    return b"\x93NUMPY" + version + size + header + body


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression) as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return out.getvalue()


def hf_zip() -> bytes:
    """A tiny GPT-2 saved with save_pretrained, zipped."""
    import tempfile

    import transformers

    config = transformers.GPT2Config(vocab_size=11, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder, safe_serialization=True)
        return zip_bytes({f"tiny/{p.name}": p.read_bytes() for p in Path(folder).iterdir() if p.is_file()})


def seeds() -> list[tuple[str, str, bytes]]:
    """(name, reader, bytes) of valid files; reader is checkpoint, data, trajectory or spec."""
    import numpy as np
    import torch

    generator = torch.Generator().manual_seed(0)
    mlp = {"fc1.weight": torch.randn(8, 3, generator=generator), "fc1.bias": torch.zeros(8),
           "fc2.weight": torch.randn(1, 8, generator=generator), "fc2.bias": torch.zeros(1)}
    x, y = np.random.default_rng(0).normal(size=(20, 3)), np.random.default_rng(1).normal(size=(20, 1))
    csv = "x1,x2,x3,y\n" + "\n".join(",".join(f"{v:.3f}" for v in [*a, *b]) for a, b in zip(x, y))
    spec = json.dumps({"layers": [{"type": "linear", "in": 3, "out": 8, "name": "fc1"}, {"type": "relu"},
                                  {"type": "linear", "in": 8, "out": 1, "name": "fc2"}]})
    found = [
        ("mlp.safetensors", "checkpoint", safetensors_bytes(mlp)),
        ("mlp.pt", "checkpoint", torch_bytes(mlp)),
        ("mlp_legacy.pt", "checkpoint", torch_bytes(mlp, legacy=True)),
        ("nested.pt", "checkpoint", torch_bytes({"model": mlp, "step": 5, "optimizer": {"lr": 0.1}})),
        ("classifier.pt2", "checkpoint", (EXAMPLES / "classifier.pt2").read_bytes()),
        ("tiny_gpt2.zip", "checkpoint", hf_zip()),
        ("data.npz", "data", npz_bytes({"x": x, "y": y})),
        ("tokens.npz", "data", npz_bytes({"tokens": np.arange(40).reshape(4, 10) % 7})),
        ("data.csv", "data", csv.encode()),
        ("data.safetensors", "data", safetensors_bytes({"x": torch.tensor(x), "y": torch.tensor(y)})),
        ("data.pt", "data", torch_bytes({"x": torch.tensor(x), "y": torch.tensor(y)})),
        ("pair.pt", "data", torch_bytes((torch.tensor(x), torch.tensor(y)))),
        ("dln_training.zip", "trajectory", (EXAMPLES / "dln_training.zip").read_bytes()),
        ("spec.json", "spec", spec.encode()),
    ]
    return found + odd_tensors(mlp)


def odd_tensors(mlp: dict) -> list[tuple[str, str, bytes]]:
    """Tensors of kinds a reader may not expect: each dtype, sparse, meta, 0-d, empty, many keys."""
    import torch

    found = []
    for dtype in (torch.bfloat16, torch.float16, torch.float64, torch.int8, torch.uint8, torch.int64, torch.bool,
                  torch.complex64, torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16, torch.uint32):
        name = str(dtype).replace("torch.", "")
        tensors = {k: v.to(dtype) for k, v in mlp.items()}
        found.append((f"mlp_{name}.safetensors", "checkpoint", safetensors_bytes(tensors)))
        found.append((f"mlp_{name}.pt", "checkpoint", torch_bytes(tensors)))
        data = {"x": torch.ones(6, 3).to(dtype), "y": torch.ones(6, 1).to(dtype)}
        found.append((f"data_{name}.safetensors", "data", safetensors_bytes(data)))
        found.append((f"data_{name}.pt", "data", torch_bytes(data)))
    sparse = {"fc1.weight": torch.eye(3).to_sparse(), "fc1.bias": torch.zeros(3)}
    meta = {"fc1.weight": torch.empty(3, 3, device="meta"), "fc1.bias": torch.empty(3, device="meta")}
    found += [
        ("sparse.pt", "checkpoint", torch_bytes(sparse)),
        ("sparse_data.pt", "data", torch_bytes({"x": torch.eye(3).to_sparse(), "y": torch.ones(3, 1)})),
        ("meta.pt", "checkpoint", torch_bytes(meta)),
        ("meta_data.pt", "data", torch_bytes({"x": torch.empty(4, 2, device="meta"), "y": torch.ones(4, 1)})),
        ("scalar.pt", "checkpoint", torch_bytes({"w.weight": torch.tensor(1.0)})),
        ("empty.pt", "checkpoint", torch_bytes({"w.weight": torch.zeros(0, 3), "w.bias": torch.zeros(0)})),
        ("empty_data.npz", "data", npz_bytes({"x": __import__("numpy").zeros((0, 3)), "y": __import__("numpy").zeros(0)})),
        ("many.safetensors", "checkpoint", safetensors_bytes({f"l{i}.weight": torch.ones(1, 1) for i in range(3000)})),
        ("int_keys.pt", "checkpoint", torch_bytes({0: torch.ones(2, 2), 1: torch.ones(2)})),
        ("strided.pt", "checkpoint", torch_bytes({"fc.weight": torch.ones(4, 6)[:, ::2], "fc.bias": torch.ones(4)})),
        ("view.pt", "data", torch_bytes({"x": torch.arange(12.0).view(6, 2), "y": torch.arange(6.0)})),
    ]
    return found


# ====================================================================== mutations


def truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(0, max(1, len(data)))]


def flip(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.choice([1, 2, 5, 20])):
        if out:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def junk(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.choice([1, 8, 100, 5000])) + data[at:]


def cut(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + data[at + rng.choice([1, 4, 64, 1000]):]


def zero_head(rng: random.Random, data: bytes) -> bytes:
    size = rng.choice([8, 64, 512])
    return b"\0" * size + data[size:]


def huge_numbers(rng: random.Random, data: bytes) -> bytes:
    """Replace a run of ASCII digits (a shape, a size, an offset in a header) with a huge or negative number."""
    import re

    runs = [m for m in re.finditer(rb"\d+", data[:20000])]
    if not runs:
        return flip(rng, data)
    run = rng.choice(runs)
    value = rng.choice([b"10000000000", b"-1", b"999999999999999999999999", b"0", b"18446744073709551615"])
    return data[: run.start()] + value + data[run.end():]


def rezip(rng: random.Random, data: bytes) -> bytes:
    """Rebuild a zip with one member renamed (its suffix dropped, a traversal path, junk), duplicated or dropped."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()}
    except Exception:  # noqa: BLE001 - not a zip any more (an earlier mutation): mutate the bytes instead
        return flip(rng, data)
    if not members:
        return data
    name = rng.choice(list(members))
    body = members.pop(name)
    what = rng.choice(["suffix", "traversal", "absolute", "duplicate", "drop", "extra", "nested", "deflate"])
    if what == "suffix":
        members[name.rsplit(".", 1)[0]] = body
    elif what == "traversal":
        members["../../" + name] = body
    elif what == "absolute":
        members["/tmp/" + name] = body
    elif what == "duplicate":
        members[name] = body
        members[name + ".copy.npy" if name.endswith(".npy") else "copy_" + name] = body
    elif what == "extra":
        members[name] = body
        members["notes.txt"] = b"hello"
    elif what == "nested":
        members[name] = body
        members["inner.zip"] = data
    elif what == "deflate":
        members[name] = body
        return zip_bytes(members, zipfile.ZIP_DEFLATED)
    return zip_bytes(members)


def npy_claims(rng: random.Random, data: bytes) -> bytes:
    """An .npz (or a zip of checkpoints) whose .npy header claims a huge, negative or odd shape or dtype."""
    shape = rng.choice([(10**10, 3), (-1, 3), (2**62, 2**62), (0,), (), (3, 0), (10**6,) * 8, (3, -5), (1 << 70,)])
    descr = rng.choice(["<f8", "<f4", "|O", "<U10", "<c16", "|b1", "V8", "<f2", ">i4", "<M8[s]", "|S3", "<i8"])
    header = rng.choice([None, None, None, "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 1), 'x': __import__('os')}",
                         "{'descr': '<f8'}", "x" * 20000, "{" * 5000, "{'descr': '<f8', 'fortran_order': 'yes', 'shape': (3,)}"])
    version = rng.choice([b"\x01\x00", b"\x01\x00", b"\x02\x00", b"\x03\x00", b"\x09\x09"])
    npy = npy_bytes(shape, descr, body=b"\0" * rng.choice([0, 8, 64]), fortran=rng.random() < 0.2,
                    header_text=header, version=version)
    name = rng.choice(["x.npy", "y.npy", "x", "tokens.npy"])
    members = {name: npy, "y.npy" if name != "y.npy" else "x.npy": npy_bytes((3, 1), body=b"\0" * 24)}
    return zip_bytes(members)


def safetensors_claims(rng: random.Random, data: bytes) -> bytes:
    """A safetensors file whose header claims another shape, dtype or offsets, or is deep or huge JSON."""
    header = rng.choice([
        {"w.weight": {"dtype": "F32", "shape": [10**10, 3], "data_offsets": [0, 16]}},
        {"w.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 10**12]}},
        {"w.weight": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 16]}},
        {"w.weight": {"dtype": "X99", "shape": [2, 2], "data_offsets": [0, 16]}},
        {"w.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}},
        {"w.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, "__metadata__": {"a": "b" * 100000}},
        {"w.weight": "nope"},
        [[[[[]]]]],
    ])
    text = json.dumps(header).encode()
    if rng.random() < 0.3:
        text = b'{"a":' * 5000 + b"1" + b"}" * 5000
    return struct.pack("<Q", len(text)) + text + b"\0" * 16


def deep_json(rng: random.Random, data: bytes) -> bytes:
    """JSON nested far too deep where a reader parses JSON: a spec, a config.json, a .pt2's configs."""
    deep = rng.choice([b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 100_000])
    if data[:2] == b"PK":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                members = {info.filename: archive.read(info) for info in archive.infolist()}
        except Exception:  # noqa: BLE001 - not a zip any more: the deep JSON alone
            return deep
        targets = [n for n in members if n.endswith(".json")] or list(members)
        members[rng.choice(targets)] = deep
        return zip_bytes(members)
    return deep


def long_csv(rng: random.Random, data: bytes) -> bytes:
    kind = rng.choice(["field", "columns", "nul", "quote", "bom", "latin1", "ragged", "header", "huge"])
    if kind == "field":
        return b"x,y\n1," + b"9" * rng.choice([200_000, 2_000_000]) + b"\n2,3\n4,5\n"
    if kind == "columns":
        count = rng.choice([10_000, 100_000])
        return (",".join(f"c{i}" for i in range(count)) + "\n" + ",".join("1" for _ in range(count)) + "\n") .encode() * 3
    if kind == "nul":
        return b"x,y\n1,\x002\n3,4\n5,6\n"
    if kind == "quote":
        return b'x,y\n"1' + b"a" * 300_000 + b"\n2,3\n"
    if kind == "bom":
        return b"\xef\xbb\xbfx,y\n1,2\n3,4\n5,6\n"
    if kind == "latin1":
        return "x,\xff\n1,2\n3,4\n".encode("latin1")
    if kind == "ragged":
        return b"x,y\n1,2,3\n4\n"
    if kind == "header":
        return b"1,2\n3,4\n5,6\n"
    return b"x,y\n" + b"1e999,-1e999\nnan,inf\n" * 3


def zip_bomb(rng: random.Random, data: bytes) -> bytes:
    """A member that unpacks to far more than the limit, declared honestly or as a few bytes."""
    return _bomb(rng.choice(["model.safetensors", "x.npy", "ckpt_1.pt", "config.json"]), honest=rng.random() < 0.5)


_BOMBS: dict[tuple[str, bool], bytes] = {}


def _bomb(name: str, honest: bool) -> bytes:
    key = (name, honest)
    if key not in _BOMBS:
        import zlib

        size = 300 * 2**20
        compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
        chunk = b"\0" * 2**20
        body = b"".join(compressor.compress(chunk) for _ in range(300)) + compressor.flush()
        crc = 0
        for _ in range(300):
            crc = zlib.crc32(chunk, crc)
        declared = size if honest else 100
        encoded = name.encode()
        local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(body), declared, len(encoded), 0)
        central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(body), declared,
                              len(encoded), 0, 0, 0, 0, 0, 0)
        offset = len(local) + len(encoded) + len(body)
        end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central) + len(encoded), offset, 0)
        _BOMBS[key] = local + encoded + body + central + encoded + end
    return _BOMBS[key]


def legacy_storage_claim(rng: random.Random, data: bytes) -> bytes:
    """A legacy (non-zip) torch.save file whose storage claims 10^12 elements."""
    import re

    runs = list(re.finditer(rb"\x8a\x0a|K\x18|K\x08|K\x01", data))
    if not runs:
        return huge_numbers(rng, data)
    run = rng.choice(runs)
    return data[: run.start()] + b"\x8a\x06\x00\x10\xa5\xd4\xe8\x00" + data[run.end():]


GENERIC = [truncate, flip, junk, cut, zero_head, huge_numbers]
BY_READER: dict[str, list[Callable]] = {
    "checkpoint": GENERIC + [rezip, rezip, safetensors_claims, deep_json, zip_bomb, legacy_storage_claim],
    "data": GENERIC + [rezip, npy_claims, npy_claims, npy_claims, safetensors_claims, long_csv, long_csv, zip_bomb],
    "trajectory": GENERIC + [rezip, rezip, npy_claims, zip_bomb, deep_json],
    "spec": [truncate, flip, junk, deep_json, huge_numbers],
}
SLOW = ("classifier.pt2", "tiny_gpt2.zip", "dln_training.zip")  # a read takes ~0.1-1 s: fewer cases


def cases(seed: int, count: int, readers: tuple[str, ...] = tuple(BY_READER)) -> list[tuple[str, str, str, bytes]]:
    """(seed file, reader, mutation, bytes): every seed of `readers` as it is first, then mutations."""
    rng = random.Random(seed)
    files = [f for f in seeds() if f[1] in readers]
    out = [(name, reader, "none", body) for name, reader, body in files]
    weights = [0.25 if name in SLOW else 1.0 for name, _, _ in files]
    while len(out) < count:
        name, reader, body = rng.choices(files, weights)[0]
        mutate = rng.choice(BY_READER[reader])
        mutated = mutate(rng, body)
        if rng.random() < 0.15:
            mutated = rng.choice(GENERIC)(rng, mutated)
        out.append((name, reader, mutate.__name__, mutated))
    return out[:count]


# ====================================================================== the readers


def read(reader: str, body: bytes) -> None:
    """What the pages do with a file: the Checkpoint page loads the weights, infers the architecture and maps the
    state dict; reads the data's arrays, then the dataset; parses a spec. The Training-run page expands a zip."""
    from llc_core.files import checkpoint as ckpt
    from llc_core.files import datafiles
    from llc_core.studies import trajectory

    if reader == "checkpoint":
        loaded = ckpt.load_checkpoint(body)
        sum(v.numel() for v in loaded.state_dict.values())
        if loaded.module is None:
            spec = ckpt.infer_architecture(loaded.state_dict, "relu", file_order_meaningful=loaded.format != "safetensors")
            ckpt.describe_architecture(spec)
            ckpt.model_from_checkpoint(loaded, activation="relu")
    elif reader == "data":
        _, arrays = datafiles.read_arrays(body)
        {name: tuple(array.shape) for name, array in arrays.items()}  # the page shows every array's shape
        datafiles.load_dataset(body)
    elif reader == "trajectory":
        trajectory.checkpoints_from_files([("run.zip", body)], activation="identity")
    else:
        ckpt.describe_architecture(ckpt.parse_architecture(body.decode("utf-8", "replace")))


class Hang(Exception):
    pass


def on_alarm(signum, frame):
    raise Hang()


def outcome(reader: str, body: bytes, limit: int) -> str | None:
    """None when the reader succeeded or raised one clear LLCInputError line; else what went wrong."""
    from llc_core.errors import LLCInputError

    signal.alarm(limit)
    try:
        read(reader, body)
        return None
    except LLCInputError as err:
        text = str(err)
        if not text or "\n" in text or len(text) > MAX_MESSAGE or "Traceback" in text:
            return f"unclear LLCInputError ({len(text)} chars): {text[:300]!r}"
        return None
    except Hang:
        return f"hung over {limit} s"
    except BaseException as exc:  # noqa: BLE001 - every other escape is a finding
        return f"raised {type(exc).__name__}: {str(exc)[:200]}"
    finally:
        signal.alarm(0)


def main() -> int:
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    limit = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    readers = tuple(sys.argv[4].split(",")) if len(sys.argv) > 4 else tuple(BY_READER)
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, on_alarm)
    started = time.monotonic()
    for name, reader, mutation, body in cases(seed, count, readers):
        problem = outcome(reader, body, limit)
        if problem:
            print(json.dumps({"seed_file": name, "reader": reader, "mutation": mutation, "size": len(body),
                              "head": body[:60].hex(), "problem": problem}), flush=True)
    print(json.dumps({"done": count, "seconds": round(time.monotonic() - started, 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
