"""cliplit.core.pth reads torch.save checkpoints exactly as torch does, without torch, and never runs their code.

torch.load is the oracle for every value. The malicious files carry live payloads (each test proves it by letting
torch.load(weights_only=False) run its payload once, into tmp_path) so "no marker file" really means "not executed".
"""

from __future__ import annotations

import os
import shlex
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cliplit.core.errors import CliplitError
from cliplit.core.pth import UnsafeWeightsError, WeightsFormatError, read_pth

RT_WEIGHTS = Path(__file__).resolve().parents[1] / "core" / "released" / "clip-lit-rt.pth"


def _assert_same(ours: Any, theirs: Any, where: str = "root") -> None:
    """Deep equality of read_pth's result with torch.load's: arrays for tensors, same containers, same scalars."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, np.ndarray), where
        expected = (theirs.float() if theirs.dtype == torch.bfloat16 else theirs).detach().numpy()
        assert ours.dtype == expected.dtype, where
        assert ours.shape == expected.shape, where
        assert ours.flags.c_contiguous, where
        assert np.array_equal(ours, expected), where
    elif isinstance(theirs, dict):
        assert isinstance(ours, dict), where
        assert list(ours) == list(theirs), where
        for key in theirs:
            _assert_same(ours[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(theirs, list | tuple):
        assert type(ours) is type(theirs), where
        assert len(ours) == len(theirs), where
        for i, (mine, other) in enumerate(zip(ours, theirs, strict=True)):
            _assert_same(mine, other, f"{where}[{i}]")
    else:
        assert type(ours) is type(theirs), where
        assert ours == theirs, where


def _count_arrays(value: Any) -> int:
    if isinstance(value, np.ndarray):
        return 1
    if isinstance(value, dict):
        return sum(_count_arrays(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_count_arrays(v) for v in value)
    return 0


def _rewrite(src: Path, dst: Path, edit: Callable[[str, bytes], tuple[str, bytes] | None]) -> Path:
    """Copy a zip entry by entry through ``edit`` (which may rename, change or drop, by returning None, an entry)."""
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as new:
        for name in old.namelist():
            edited = edit(name, old.read(name))
            if edited is not None:
                new.writestr(*edited)
    return dst


# --- the released weights ---------------------------------------------------------------------------------------


def test_the_released_clip_lit_weights_read_as_torch_reads_them(released_weights):
    ours = read_pth(released_weights)
    theirs = torch.load(released_weights, map_location="cpu", weights_only=True)
    _assert_same(ours, theirs)
    assert _count_arrays(ours) == len(theirs) > 10


def test_the_bundled_real_time_weights_read_as_torch_reads_them():
    with zipfile.ZipFile(RT_WEIGHTS) as zf:
        assert not any(name.startswith("archive/") for name in zf.namelist())  # the unusual top folder is exercised
    ours = read_pth(RT_WEIGHTS)
    theirs = torch.load(RT_WEIGHTS, map_location="cpu", weights_only=True)
    _assert_same(ours, theirs)
    assert isinstance(ours["state_dict"], dict) and _count_arrays(ours["state_dict"]) > 10
    assert ours["format"] == "cliplit-enhancer" and isinstance(ours["source"]["config"]["widths"], tuple)


# --- tensor layouts and dtypes ----------------------------------------------------------------------------------


def test_offsets_strides_and_shared_storage_are_honoured(tmp_path):
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8)
    saved = {"a": base[1:, ::2], "b": base.t(), "c": base[2, 3:], "d": base[4, 5], "e": base[:0]}
    path = tmp_path / "views.pth"
    torch.save(saved, path)
    ours = read_pth(path)
    _assert_same(ours, torch.load(path, weights_only=True))
    assert ours["b"][3, 1] == base[1, 3].item() and ours["b"].shape == (8, 6)
    assert ours["d"].shape == () and ours["e"].shape == (0, 8)
    assert not np.shares_memory(ours["a"], ours["b"])  # copies, not views pinning the whole storage
    ours["a"][0, 0] = -1.0  # and writable
    assert ours["b"][0, 1] == 8.0


def test_every_supported_dtype_reads_exactly(tmp_path):
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, generator=generator) * 1000
    saved = {
        "float32": values,
        "float64": values.double() / 7,
        "float16": values.half(),
        "bfloat16": values.bfloat16(),
        "int64": (values * 1e6).long(),
        "int32": values.int(),
        "int16": values.short(),
        "int8": (values / 100).to(torch.int8),
        "uint8": values.abs().to(torch.uint8),
        "bool": values > 0,
        "parameter": torch.nn.Parameter(values[:, 1:].clone()),
        "nested": [(values[0], {"x": values.half()[2]}), 7, "text", None, 2.5],
    }
    path = tmp_path / "dtypes.pth"
    torch.save(saved, path)
    ours = read_pth(path)
    _assert_same(ours, torch.load(path, weights_only=True))
    assert ours["bfloat16"].dtype == np.float32 and ours["bool"].dtype == np.bool_
    assert not np.array_equal(ours["bfloat16"], ours["float32"])  # genuinely rounded to bfloat16, then widened


def test_the_top_folder_is_found_whatever_its_name(tmp_path):
    path = tmp_path / "my.custom-name.pth"
    torch.save({"w": torch.arange(6).reshape(2, 3)}, path)
    renamed = _rewrite(
        path,
        tmp_path / "renamed.pth",
        lambda name, data: (".odd top.1234.part/" + name.split("/", 1)[1], data),
    )
    for file in (path, renamed):
        with zipfile.ZipFile(file) as zf:
            assert all(not name.startswith("archive/") for name in zf.namelist())
        _assert_same(read_pth(file), {"w": torch.arange(6).reshape(2, 3)})


@pytest.mark.parametrize(
    "dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.bool]
)
def test_big_endian_checkpoints_are_converted(tmp_path, dtype):
    tensor = (torch.arange(-6, 6).reshape(3, 4) * 1.75).to(dtype)
    path = tmp_path / "little.pth"
    torch.save({"t": tensor}, path)
    itemsize = tensor.element_size()

    def to_big_endian(name: str, data: bytes) -> tuple[str, bytes]:
        if name.endswith("/byteorder"):
            return name, b"big"
        if "/data/" in name:
            return name, np.frombuffer(data, dtype=f"<u{itemsize}" if itemsize > 1 else "u1").byteswap().tobytes()
        return name, data

    big = _rewrite(path, tmp_path / "big.pth", to_big_endian)
    _assert_same(read_pth(big), {"t": tensor})
    if itemsize > 1:
        with zipfile.ZipFile(big) as swapped, zipfile.ZipFile(path) as original:  # the rewrite really swapped them
            assert swapped.read("little/data/0") != original.read("little/data/0")


# --- malicious files --------------------------------------------------------------------------------------------


class _Payload:
    """An object whose unpickling calls ``call(*args)``: the classic pickle code-execution gadget."""

    def __init__(self, call: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.call, self.args = call, args

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self.call, self.args


PAYLOADS: dict[str, Callable[[Path], tuple[Callable[..., Any], tuple[Any, ...]]]] = {
    "os.system": lambda marker: (os.system, (f"touch {shlex.quote(str(marker))}",)),
    "builtins.exec": lambda marker: (exec, (f"open({str(marker)!r}, 'w').close()",)),
    "builtins.eval": lambda marker: (eval, (f"open({str(marker)!r}, 'w').close()",)),
    "torch.save": lambda marker: (torch.save, (torch.zeros(1), str(marker))),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_a_malicious_checkpoint_is_refused_without_running_its_payload(tmp_path, kind):
    marker = tmp_path / "pwned"
    call, args = PAYLOADS[kind](marker)
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.ones(2, 2), "meta": {"evil": _Payload(call, args)}, "bias": torch.zeros(2)}, path)

    with pytest.raises(UnsafeWeightsError) as caught:
        read_pth(path)
    message = str(caught.value)
    assert f"{call.__module__}.{call.__qualname__}" in message  # names the refused global (os.system is posix.system)
    assert str(path) in message and "\n" not in message
    assert isinstance(caught.value, CliplitError)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the control: an unsafe loader does run this payload
    assert marker.exists()


def test_a_hand_written_pickle_cannot_reach_attributes_of_allowed_globals(tmp_path):
    path = tmp_path / "sneaky.pth"
    torch.save({"w": torch.ones(1)}, path)
    # protocol 4 STACK_GLOBAL takes dotted names, which plain pickle resolves by walking attributes from a module, so
    # an allowed global would lead to any object; only exact whitelisted names may pass
    module, name = b"collections", b"OrderedDict.__init__.__class__"
    sneaky = b"\x80\x04\x8c" + bytes([len(module)]) + module + b"\x8c" + bytes([len(name)]) + name + b"\x93."
    crafted = _rewrite(path, tmp_path / "crafted.pth", lambda n, d: (n, sneaky if n.endswith("/data.pkl") else d))
    with pytest.raises(UnsafeWeightsError, match=r"collections\.OrderedDict\.__init__\.__class__"):
        read_pth(crafted)


# --- files that are not checkpoints -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"these are not the weights you are looking for\n" * 20, id="junk"),
        pytest.param(None, id="truncated"),
    ],
)
def test_files_that_are_not_zip_checkpoints_are_reported(tmp_path, released_weights, content):
    if content is None:
        content = released_weights.read_bytes()[: released_weights.stat().st_size // 2]
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsFormatError, match="not a zip-format PyTorch checkpoint") as caught:
        read_pth(path)
    assert str(path) in str(caught.value) and "PyTorch >= 1.6" in str(caught.value)


def test_a_legacy_format_checkpoint_is_reported(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsFormatError, match="not a zip-format PyTorch checkpoint") as caught:
        read_pth(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_reported(tmp_path):
    with pytest.raises(WeightsFormatError, match="does not exist"):
        read_pth(tmp_path / "nowhere.pth")


def test_a_zip_without_data_pkl_is_reported(tmp_path):
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/readme.txt", "hello")
    with pytest.raises(WeightsFormatError, match=r"data\.pkl") as caught:
        read_pth(path)
    assert str(path) in str(caught.value)


def test_a_missing_tensor_entry_is_reported(tmp_path):
    damaged = _rewrite(RT_WEIGHTS, tmp_path / "missing.pth", lambda n, d: None if n.endswith("/data/3") else (n, d))
    with pytest.raises(WeightsFormatError, match=r"lacks the tensor data entry .*/data/3") as caught:
        read_pth(damaged)
    assert str(damaged) in str(caught.value)


def test_a_wrongly_sized_tensor_entry_is_reported(tmp_path):
    damaged = _rewrite(RT_WEIGHTS, tmp_path / "short.pth", lambda n, d: (n, d[:-4] if n.endswith("/data/3") else d))
    with pytest.raises(WeightsFormatError, match=r"data/3 holds \d+ bytes where the checkpoint expects \d+"):
        read_pth(damaged)


def test_a_damaged_pickle_is_reported_not_raised_raw(tmp_path):
    truncated = _rewrite(RT_WEIGHTS, tmp_path / "pkl.pth", lambda n, d: (n, d[:100] if n.endswith("/data.pkl") else d))
    with pytest.raises(WeightsFormatError, match=r"data\.pkl is not a valid checkpoint pickle") as caught:
        read_pth(truncated)
    assert str(truncated) in str(caught.value)
