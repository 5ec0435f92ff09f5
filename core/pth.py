"""A safe, torch-free reader of PyTorch's zip-format ``.pth`` checkpoints (what ``torch.save`` writes since 1.6).

Why this exists: the runtime installs without torch, yet the released weights are ``.pth`` files. And a ``.pth`` is a
pickle, which can name any Python callable and have the unpickler call it; loading a stranger's file with plain
``pickle`` (or ``torch.load(weights_only=False)``) runs whatever code it carries. This reader never does. Its
unpickler resolves only the handful of globals that a checkpoint of tensors needs (``OrderedDict``, the two tensor
rebuild functions and the typed storage names) to local, side-effect-free stand-ins; any other global, from ``os``,
``builtins`` or even ``torch``, stops the load with :class:`UnsafeWeightsError` before it can be called. Tensors come
back as NumPy arrays, copied out of the archive's raw storage bytes with their offset, shape and strides.

The format: a zip with one top folder (``archive/`` when saved to a buffer, otherwise the file's stem, which is why it
cannot be assumed), holding ``data.pkl`` (the pickled object), ``data/<key>`` (one raw little- or big-endian storage
per key, see ``byteorder``) and bookkeeping files this reader does not need.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import os
import pickle
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from cliplit.core.errors import CliplitError

RESAVE_HINT = "re-save it with torch.save from PyTorch >= 1.6"
# Everything zipfile can raise on a damaged, unsupported or encrypted archive; none of it may escape raw.
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError, EOFError, OSError, ValueError)


class UnsafeWeightsError(CliplitError):
    """A weights file that asks for a Python global no checkpoint of tensors needs, so it is refused unread."""


class WeightsFormatError(CliplitError):
    """A file that is not a well-formed zip-format PyTorch checkpoint (legacy format, damaged, or not one at all)."""


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.<X>Storage``: the pickle only uses it to say which dtype a storage's bytes hold."""

    name: str
    dtype: np.dtype


# bfloat16 has no NumPy dtype: its storages are read as uint16 and widened to float32 exactly (see _decode_storage).
_STORAGE_TYPES = {
    f"{prefix}Storage": _StorageType(f"{prefix}Storage", np.dtype(dtype))
    for prefix, dtype in {
        "Float": np.float32,
        "Double": np.float64,
        "Half": np.float16,
        "BFloat16": np.uint16,
        "Long": np.int64,
        "Int": np.int32,
        "Short": np.int16,
        "Char": np.int8,
        "Byte": np.uint8,
        "Bool": np.bool_,
    }.items()
}


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    """The shape or strides of a tensor, checked to be non-negative ints so a crafted pickle cannot index wildly."""
    if not isinstance(value, tuple | list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise WeightsFormatError(f"a tensor's {what} is {value!r}, not a tuple of non-negative integers")
    return tuple(value)


def _rebuild_tensor_v2(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, backward_hooks: Any, *_: Any
) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a C-contiguous copy of the tensor's view of its storage.

    The copy matters: several tensors may view one storage, and a view kept alive would pin (and alias) all of it.
    """
    if not isinstance(storage, np.ndarray) or storage.ndim != 1:
        raise WeightsFormatError("a tensor is rebuilt from something that is not a storage of the checkpoint")
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise WeightsFormatError(f"a tensor's storage offset is {storage_offset!r}, not a non-negative integer")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise WeightsFormatError(f"a tensor has size {shape} but {len(strides)} strides")
    if 0 not in shape:
        last = storage_offset + sum((n - 1) * s for n, s in zip(shape, strides, strict=True))
        if last >= storage.size:
            raise WeightsFormatError(
                f"a tensor of size {shape}, stride {strides} at offset {storage_offset} reads past the end of its "
                f"storage of {storage.size} elements"
            )
    base = storage[storage_offset:] if storage_offset < storage.size else storage[:0]
    view = np.lib.stride_tricks.as_strided(
        base, shape=shape, strides=[s * storage.itemsize for s in strides], writeable=False
    )
    return np.array(view, order="C", copy=True)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, *_: Any) -> np.ndarray:
    """Stand-in for ``torch._utils._rebuild_parameter``: an ``nn.Parameter`` is just its tensor here."""
    if not isinstance(data, np.ndarray):
        raise WeightsFormatError("a parameter is rebuilt from something that is not a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): storage_type for name, storage_type in _STORAGE_TYPES.items()},
}


def _decode_storage(raw: bytes, storage_type: _StorageType, big_endian: bool) -> np.ndarray:
    """A storage's raw bytes as a 1-D array in native byte order; bfloat16 becomes float32 (its exact widening)."""
    dtype = storage_type.dtype.newbyteorder(">") if big_endian else storage_type.dtype.newbyteorder("<")
    array = np.frombuffer(raw, dtype=dtype).astype(storage_type.dtype.newbyteorder("="), copy=False)
    if storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler whose only reachable callables are the stand-ins of ``_ALLOWED_GLOBALS``.

    ``find_class`` is the single gate: REDUCE, NEWOBJ, INST, OBJ and EXT all get their callable through it, so a
    payload naming anything else fails there, before anything is called.
    """

    def __init__(self, archive: _Archive) -> None:
        super().__init__(archive.open_pickle(), encoding="utf-8")
        self._archive = archive
        self._storages: dict[tuple[str, str], np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles (torch's default) spell some modules the Python 2 way (builtins is __builtin__); use the
        # Python 3 names, as pickle's own find_class does, so the message names what the file really asks for.
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafeWeightsError(
                f"{self._archive.path} refers to {module}.{name}, which a weights file never needs: "
                "refusing to load it (cliplit never runs code from model files)"
            )
        return allowed

    def persistent_load(self, pid: Any) -> np.ndarray:
        """Resolve ``('storage', storage_type, key, location, numel)`` to the storage's array (the device is moot)."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise WeightsFormatError(f"{self._archive.path} has an unknown persistent reference {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise WeightsFormatError(f"{self._archive.path} has a malformed storage reference {pid!r:.80}")
        if not isinstance(numel, int) or numel < 0:
            raise WeightsFormatError(f"{self._archive.path}: storage {key} has element count {numel!r}")
        cache_key = (key, storage_type.name)
        if cache_key not in self._storages:
            raw = self._archive.read_storage(key, numel * storage_type.dtype.itemsize)
            self._storages[cache_key] = _decode_storage(raw, storage_type, self._archive.big_endian)
        storage = self._storages[cache_key]
        if storage.size != numel:
            raise WeightsFormatError(f"{self._archive.path}: storage {key} is referenced with two different sizes")
        return storage


class _Archive:
    """The opened zip: where its top folder is, its byte order, and checked reads of its entries."""

    def __init__(self, path: str | os.PathLike[str], zf: zipfile.ZipFile) -> None:
        self.path = os.fspath(path)
        self._zip = zf
        self.top = self._find_top()
        self.big_endian = self._read_byteorder() == "big"

    def _find_top(self) -> str:
        """The folder holding ``data.pkl``; torch names it after the saved file's stem, so it must be looked up."""
        tops = [name[: -len("/data.pkl")] for name in self._zip.namelist() if name.count("/") == 1]
        tops = [top for top in tops if f"{top}/data.pkl" in self._zip.NameToInfo]
        if len(tops) != 1:
            found = "no" if not tops else f"{len(tops)}"
            raise WeightsFormatError(
                f"{self.path} is a zip with {found} <folder>/data.pkl entries, so it is not a PyTorch checkpoint "
                f"({RESAVE_HINT})"
            )
        if f"{tops[0]}/constants.pkl" in self._zip.NameToInfo:
            raise WeightsFormatError(
                f"{self.path} is a TorchScript archive (torch.jit.save), not a checkpoint: save the model's state_dict "
                "with torch.save instead"
            )
        return tops[0]

    def _read_byteorder(self) -> str:
        """``little`` or ``big``; files from before torch wrote ``byteorder`` are little-endian."""
        name = f"{self.top}/byteorder"
        if name not in self._zip.NameToInfo:
            return "little"
        order = self._read(name).decode("ascii", errors="replace").strip()
        if order not in ("little", "big"):
            raise WeightsFormatError(f"{self.path} declares byte order {order!r:.40}, neither 'little' nor 'big'")
        return order

    def _read(self, name: str) -> bytes:
        try:
            return self._zip.read(name)
        except _ZIP_ERRORS as error:
            raise WeightsFormatError(f"{self.path}: cannot read zip entry {name} ({error}); {RESAVE_HINT}") from error

    def open_pickle(self) -> io.BytesIO:
        """``data.pkl`` as a file object for the unpickler (it is read whole: pickles of weights are small)."""
        return io.BytesIO(self._read(f"{self.top}/data.pkl"))

    def read_storage(self, key: str, nbytes: int) -> bytes:
        """The raw bytes of storage ``key``, size-checked before reading so a lying entry cannot balloon memory."""
        name = f"{self.top}/data/{key}"
        info = self._zip.NameToInfo.get(name)
        if info is None:
            raise WeightsFormatError(f"{self.path} lacks the tensor data entry {name}: the file is incomplete")
        if info.file_size != nbytes:
            raise WeightsFormatError(
                f"{self.path}: tensor data entry {name} holds {info.file_size} bytes where the checkpoint expects "
                f"{nbytes}: the file is damaged"
            )
        return self._read(name)


def _open_zip(path: str | os.PathLike[str]) -> zipfile.ZipFile:
    """The checkpoint as a zip, or a WeightsFormatError that says what the file is instead."""
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError as error:
        raise WeightsFormatError(f"{os.fspath(path)} does not exist") from error
    except _ZIP_ERRORS as error:
        raise WeightsFormatError(
            f"{os.fspath(path)} is not a zip-format PyTorch checkpoint (legacy torch format, truncated, or not a "
            f"checkpoint at all: {error}); {RESAVE_HINT}"
        ) from error


def read_pth(path: str | os.PathLike[str]) -> Any:
    """The object a ``torch.save`` checkpoint holds, with every tensor as a NumPy array and no code run from the file.

    Containers come back as dict / ``OrderedDict`` / list / tuple and plain values as they are. Tensors are
    C-contiguous copies with torch's dtype and shape, except bfloat16, which becomes float32 (NumPy has no bfloat16).
    Raises :class:`UnsafeWeightsError` when the pickle names a global outside the whitelist and
    :class:`WeightsFormatError` for anything that is not a well-formed zip-format checkpoint.
    """
    with _open_zip(path) as zf:
        archive = _Archive(path, zf)
        return _unpickle(archive, _SafeUnpickler(archive).load)


def _unpickle(archive: _Archive, load: Callable[[], Any]) -> Any:
    """Run the unpickler, turning any failure a crafted or damaged pickle provokes into a WeightsFormatError."""
    try:
        return load()
    except (UnsafeWeightsError, WeightsFormatError):
        raise
    except MemoryError:
        raise
    except Exception as error:  # a hostile pickle can provoke nearly any exception from the stand-ins or pickle itself
        raise WeightsFormatError(
            f"{archive.path}: its data.pkl is not a valid checkpoint pickle ({type(error).__name__}: {error}); "
            f"{RESAVE_HINT}"
        ) from error
