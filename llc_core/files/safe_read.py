"""Reading a user's file without trusting it: bounded reads, kinds told apart by their bytes, tensors
loaded by loaders that run no code (safetensors, `torch.load(weights_only=True)`).

Checkpoints (`checkpoint.py`) and data files (`datafiles.py`) both read through here.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import zipfile
from pathlib import Path
from typing import Any

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
            size = path.stat().st_size
            if size > limit:
                raise LLCInputError(too_large(what, size, limit))
            data = path.read_bytes()
        except OSError as err:
            raise LLCInputError(f"cannot read {what} {str(source)!r}: {err.strerror}; check the path") from None
    if not data:
        raise LLCInputError(f"the {what} is empty (0 bytes): upload the file again, it may not have been saved")
    if len(data) > limit:
        raise LLCInputError(too_large(what, len(data), limit))
    return data


def too_large(what: str, size: int, limit: int) -> str:
    return (f"the {what} is {size / 2**20:.3g} MiB, over the {limit / 2**20:.3g} MiB limit "
            "(llc_core.files.checkpoint.MAX_FILE_BYTES): use a smaller model or a subset of the data")


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


def zip_names(data: bytes) -> list[str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise LLCInputError(f"the file looks like a zip archive but is corrupt or truncated ({err}): "
                            "save it again (torch.save / torch.export.save) and re-upload") from None


def _zip_kind(names: list[str]) -> str:
    if any("/code/" in n or n.startswith("code/") for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") for n in names) or any("/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any(n.endswith("data.pkl") for n in names):
        return "torch"
    if any(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def file_kind(data: bytes) -> str:
    """safetensors, torch, export, torchscript, npz, zip, pickle, or a description of another type."""
    kind = sniff(data)
    if kind == "zip":
        return _zip_kind(zip_names(data))
    if kind == "pickle":
        return "torch"  # torch.save's legacy format is a sequence of pickles; torch.load tells them apart
    return kind


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
        raise LLCInputError(f"the {what} is corrupt or truncated ({first_line(err)}): save it again and "
                            "re-upload") from None


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


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
