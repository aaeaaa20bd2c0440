"""Reading a user's file without trusting it: bounded reads, kinds told apart by their bytes, tensors
loaded by loaders that run no code (safetensors, `torch.load(weights_only=True)`), and zips read in
memory with every member path checked and the unpacked size bounded (`read_zip_members`).

Checkpoints (`checkpoint.py`) and data files (`datafiles.py`) both read through here.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import torch
from torch import Tensor

from llc_core.errors import LLCInputError


# The largest checkpoint or data file read (and the largest total inside a zip of checkpoints).
# Far above the small models this tool is for; it only stops a mistaken or hostile upload from
# filling memory.
MAX_FILE_BYTES = 256 * 2**20


def read_limited(source: bytes | str | os.PathLike, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a file (or bytes as given), refusing empty ones and ones over `limit` (MAX_FILE_BYTES)."""
    limit = MAX_FILE_BYTES if limit is None else limit
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        path = Path(source)
        try:
            with path.open("rb") as handle:
                # bounded by the bytes actually read, not by stat: /dev/zero, /proc files and pipes lie
                data = handle.read(limit + 1)
        except OSError as err:
            raise LLCInputError(f"cannot read {what} {str(source)!r}: {err.strerror}; check the path") from None
    if not data:
        raise LLCInputError(f"the {what} is empty (0 bytes): upload the file again, it may not have been saved")
    if len(data) > limit:
        raise LLCInputError(too_large(what, len(data), limit))
    return data


def few(items: list[str], most: int = 6) -> str:
    """A list for a message: its first `most` items (each cut at 60 characters) and how many more there are."""
    shown = ", ".join(clip(item) for item in items[:most])
    return f"[{shown}{f', … {len(items) - most} more' if len(items) > most else ''}]"


def listed(items: list[str], most: int = 12) -> str:
    """Names for a message, comma-separated: the first `most` (each cut at 60 characters) and how many more."""
    more = f", … {len(items) - most} more" if len(items) > most else ""
    return ", ".join(clip(item) for item in items[:most]) + more


def clip(text: object, most: int = 60) -> str:
    """A name from a file for a message: at most `most` characters."""
    text = str(text)
    return text if len(text) <= most else text[: most - 1] + "…"


def too_large(what: str, size: int, limit: int) -> str:
    # a bounded read stops at limit + 1 bytes: then only "over" is known, not the size
    amount = "over" if size == limit + 1 else f"{size / 2**20:.3g} MiB, over"
    return (f"the {what} is {amount} the {limit / 2**20:.3g} MiB limit "
            "(llc_core.files.safe_read.MAX_FILE_BYTES): use a smaller model or a subset of the data")


_OTHER_FILE_TYPES = [  # magic bytes of files people upload by mistake
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"), (b"\x93NUMPY", "a single NumPy .npy array"),
    (b"\x89HDF", "an HDF5 file (Keras/h5py)"), (b"7z\xbc\xaf", "a 7-Zip archive"),
]


def sniff(data: bytes) -> str:
    """What the bytes are: safetensors, zip, pickle, or a description of another file type."""
    if _looks_like_safetensors(data):
        return "safetensors"
    if data[:4] == b"PK\x03\x04" or data[:4] == b"PK\x05\x06":
        return "zip"
    if data[:1] == b"\x80" and len(data) > 1 and data[1] <= 5:
        return "pickle"
    for magic, name in _OTHER_FILE_TYPES:
        if data.startswith(magic):
            return name
    if data.lstrip()[:1] in (b"{", b"[") or _is_text(data[:512]):
        return "a text file"
    return "an unknown binary file"


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    header_len = int.from_bytes(data[:8], "little")
    return 2 <= header_len <= 100 * 2**20 and data[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# What zipfile raises for a damaged archive: a bad header or CRC (BadZipFile), a name that is not UTF-8
# (UnicodeDecodeError, a ValueError), a corrupt deflate stream (zlib.error), an unknown compression method
# (NotImplementedError), an encrypted member (RuntimeError), a short read (EOFError, struct.error).
ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, zlib.error, struct.error,
              NotImplementedError, RuntimeError)


def zip_names(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except ZIP_ERRORS as err:
        raise LLCInputError(f"the file looks like a zip archive but is corrupt or truncated ({first_line(err)}): "
                            "save it again (torch.save / torch.export.save) and re-upload") from None


def _zip_kind(names: list[str]) -> str:
    if any("/code/" in n or n.startswith("code/") for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") for n in names) or any("/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if looks_like_huggingface(names):
        return "huggingface"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if any(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


# What a Hugging Face model folder (save_pretrained) holds besides tokenizer and generation files:
# its config and its weights, whole or in shards listed by an index.
HF_CONFIG_NAME = "config.json"
HF_WEIGHT_NAMES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                   "pytorch_model.bin.index.json")
HF_SHARD_PATTERN = re.compile(r"^(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)$")
# Files of other kinds of checkpoint: a zip of those beside a config.json (a training run's settings)
# is a zip of checkpoints, not a Hugging Face model without weights.
_OTHER_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".pt2", ".ckpt")


def looks_like_huggingface(names: list[str]) -> bool:
    """Whether a folder's or zip's file names are a Hugging Face model's: a config.json with its
    weights, or a config.json and no other checkpoint (then the loader says which file is missing)."""
    base = [PurePosixPath(n.replace("\\", "/")).name for n in names]
    if HF_CONFIG_NAME not in base:
        return False
    if any(b in HF_WEIGHT_NAMES or HF_SHARD_PATTERN.match(b) for b in base):
        return True
    return not any(b.lower().endswith(_OTHER_CHECKPOINT_SUFFIXES + (".safetensors", ".bin")) for b in base)


def file_kind(data: bytes) -> str:
    """safetensors, torch, export, torchscript, huggingface, npz, zip, pickle, or a description of another type."""
    kind = sniff(data)
    if kind == "zip":
        return _zip_kind(zip_names(data))
    if kind == "pickle":
        return "torch"  # torch.save's legacy format is a sequence of pickles; torch.load tells them apart
    return kind


# The most files a zip read through `read_zip_members` may hold (a model folder has a handful).
MAX_ZIP_MEMBERS = 500


def zip_member_is_junk(name: str) -> bool:
    """Files that archivers add on their own (macOS resource forks, Finder metadata)."""
    return name.startswith("__MACOSX/") or PurePosixPath(name).name.startswith("._") or name.endswith(".DS_Store")


def check_zip_member_path(name: str, what: str) -> None:
    """Refuse an absolute or '..' member path: nothing is extracted to disk, but such a name only
    comes from an archive made to escape the folder it would be unpacked into."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise LLCInputError(f"refused the {what}: member {name!r} has an absolute or '..' path (path traversal); "
                            "zip the files from their own folder")


def read_zip_members(data: bytes, what: str, wanted: Callable[[str], bool]) -> dict[str, bytes]:
    """The members of a zip for which `wanted(name)` holds, read into memory (never extracted):
    every member's path checked, at most MAX_ZIP_MEMBERS files and MAX_FILE_BYTES read in all, the
    declared sizes checked first and then not trusted (a zip bomb declares small sizes)."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except ZIP_ERRORS as err:
        raise LLCInputError(f"the {what} is corrupt or truncated ({first_line(err)}): zip the files again") from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and not zip_member_is_junk(i.filename)]
        if len(infos) > MAX_ZIP_MEMBERS:
            raise LLCInputError(f"the {what} holds {len(infos)} files, over the limit of {MAX_ZIP_MEMBERS}: "
                                "zip only the files needed")
        for info in infos:
            check_zip_member_path(info.filename, what)
        chosen = [i for i in infos if wanted(i.filename)]
        declared = sum(i.file_size for i in chosen)
        if declared > MAX_FILE_BYTES:
            raise LLCInputError(too_large(f"{what} (unpacked)", declared, MAX_FILE_BYTES))
        members, total = {}, 0
        for info in chosen:
            try:
                with archive.open(info) as member:
                    body = member.read(MAX_FILE_BYTES + 1 - total)
            except ZIP_ERRORS as err:
                raise LLCInputError(f"the {what}'s member {info.filename!r} cannot be read ({first_line(err)}): "
                                    "zip the files again (plain deflate, no encryption)") from None
            total += len(body)
            if total > MAX_FILE_BYTES or len(body) > info.file_size:
                raise LLCInputError(f"refused the {what}: it unpacks to more than its declared size or the "
                                    f"{MAX_FILE_BYTES / 2**20:.0f} MiB limit")
            members[info.filename] = body
    return members


def wrong_type_error(kind: str, what: str, expected: str) -> LLCInputError:
    if kind == "zip":
        return LLCInputError(f"the {what} is a zip archive of no kind this tool reads: upload {expected}")
    if kind == "safetensors":
        kind = "a safetensors file"
    return LLCInputError(f"the {what} is {kind}, not a supported format: upload {expected}")


def load_safetensors(data: bytes, what: str) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load

    header_len = int.from_bytes(data[:8], "little")
    if 8 + header_len > len(data):
        raise LLCInputError(f"the {what} (safetensors) is truncated: its header says {header_len} bytes but the "
                            f"file has {len(data) - 8} after the length; upload the complete file")
    try:
        return dict(load(data))
    except (SafetensorError, ValueError, RuntimeError) as err:
        raise LLCInputError(f"the {what} (safetensors) is corrupt or truncated ({first_line(err)}): "
                            "save it again with safetensors.torch.save_file and re-upload") from None


def torch_load_weights_only(data: bytes, what: str) -> Any:
    """torch.load(weights_only=True) of bytes, with a specific message for each way it can fail."""
    try:
        return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as err:
        unsafe = unsafe_globals(data)
        if unsafe:
            raise LLCInputError(
                f"refused to load the {what}: its pickle needs {', '.join(unsafe)}, which could run code "
                "(nothing from it was run). Save plain tensors instead: torch.save(model.state_dict(), path) "
                "or safetensors"
            ) from None
        raise LLCInputError(f"the {what} is not a plain torch.save file of tensors, or it is corrupt "
                            f"({first_line(err)[:120]}…): save plain tensors with torch.save(model.state_dict(), path) "
                            "or safetensors") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, IndexError) as err:
        raise LLCInputError(f"the {what} is corrupt or truncated ({first_line(err)[:120]}): save it again and "
                            "re-upload") from None
    except (TypeError, AttributeError) as err:  # e.g. a BUILD whose state __setstate__ or set_() refuses
        raise LLCInputError(f"the {what} is not a plain torch.save file of tensors, or it is corrupt "
                            f"({type(err).__name__}: {first_line(err)[:120]}): save plain tensors with "
                            "torch.save(model.state_dict(), path) or safetensors") from None


def unsafe_globals(data: bytes) -> list[str]:
    """The globals a torch.save file or pickle imports that weights_only does not allow: a static
    read of the pickle opcodes, nothing is run."""
    if sniff(data) == "zip":
        try:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(data)))
        except Exception:  # not a torch.save zip: fall through to a scan of every pickle in it
            return []
    found = _pickle_globals(data)
    allowed = _allowed_globals()
    return sorted(g for g in found if g not in allowed)


def _allowed_globals() -> set[str]:
    try:  # private, but the exact allow-list torch.load(weights_only=True) uses
        from torch import _weights_only_unpickler
        return set(_weights_only_unpickler._get_allowed_globals())
    except Exception:  # pragma: no cover - older/newer torch: report every global
        return set()


def _pickle_globals(data: bytes) -> set[str]:
    """GLOBAL / STACK_GLOBAL imports of every pickle in a stream (torch's legacy format has several)."""
    found: set[str] = set()
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        strings: list[str] = []
        memo: dict[int, str] = {}
        memo_count = 0
        last: str | None = None  # the string the previous opcode pushed, if any
        try:
            for opcode, arg, _ in pickletools.genops(stream):
                name = opcode.name
                pushed = None
                if name == "GLOBAL":
                    found.add(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.add(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                    pushed = str(arg)
                elif name == "MEMOIZE":
                    if last is not None:
                        memo[memo_count] = last
                    memo_count += 1
                    continue  # the stack is unchanged: `last` stays the top
                elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                    if last is not None:
                        memo[int(arg)] = last
                    continue
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    pushed = memo[int(arg)]
                if pushed is not None:
                    strings.append(pushed)
                last = pushed
                if name == "STOP":
                    break
        except Exception:  # the rest is tensor bytes (legacy format) or garbage: stop scanning
            break
    return found


# Floating types torch computes with on the CPU; the others (float8) are read as float32, which holds their values
COMPUTE_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def plain_tensor_problem(value: Tensor) -> str | None:
    """Why a tensor from a file is not a plain dense one with data (sparse, quantized, meta, complex), or None."""
    if value.layout != torch.strided:
        return f"a {str(value.layout).replace('torch.', '').replace('_', ' ')} tensor"
    if value.device.type == "meta":
        return "a meta tensor, without data"
    if value.is_quantized:
        return "a quantized tensor"
    if value.is_complex():
        return "a complex tensor"
    return None


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
