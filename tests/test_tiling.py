"""Exact tiled inference: the tiling math, the split model built without torch, and tiled == untiled on a real photo.

The memory side (a large frame under a limit the untiled path exceeds) is in test_tiling_memory.py.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_PHOTO, photo, reference

from cliplit.core.contract import MIN_SIDE, PPM_BINS, model_input_from_bgr
from cliplit.core.errors import CliplitError
from cliplit.core.images import read_image
from cliplit.core.light_map import apply_light_map_bgr8
from cliplit.core.metrics import psnr
from cliplit.core.split_contract import META_HALO, META_SPLIT_PART
from cliplit.core.weights import RELEASED
from cliplit.export.tiled_export import receptive_radius
from cliplit.runtime.backends import open_backend
from cliplit.runtime.enhancer import Enhancer
from cliplit.runtime.memory import parse_memory_size
from cliplit.runtime.models import cached_split_paths, ensure_split
from cliplit.runtime.tiling import (
    MAX_TILE,
    MIN_TILE,
    TILED_BYTES_PER_PIXEL,
    PyramidSums,
    Region,
    SplitModel,
    Tiling,
    fit_tile,
    open_tiling,
    plan_tiles,
    tiled_light_map,
)
from cliplit.runtime.tiling import budget as tiling_module
from cliplit.train.network import SplitHead, SplitTail, align_corners_weights

SHA = RELEASED["clip-lit"].sha256


@pytest.fixture(scope="module")
def split_paths():
    """The released weights' split model, built once into the test cache, where the runtime and the CLI find it."""
    return ensure_split("clip-lit")


@pytest.fixture(scope="module")
def split(split_paths) -> SplitModel:
    return SplitModel(*split_paths)


@pytest.fixture(scope="module")
def odd_photo() -> np.ndarray:
    """A real photo at 281×187: neither side divisible by 2, 3 or 6, so pooling bins overlap on both axes."""
    image = read_image(photo(SMALL_PHOTO))
    return np.ascontiguousarray(image[301:488, 140:421])


# --- the tiling math ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(MIN_SIDE, MIN_SIDE), (7, 9), (13, 17), (61, 37)])
@pytest.mark.parametrize("tile", [(1, 1), (3, 5), (6, 4), (1000, 1000)])
def test_pyramid_sums_equal_adaptive_pooling_for_any_tiling(size, tile):
    features = np.random.default_rng(sum(size) + tile[0]).random((3, *size))
    sums = PyramidSums(3, *size)
    for region in plan_tiles(*size, tile):
        sums.add(features[(slice(None), *region.slices)], region)
    means = sums.means()
    for bins in PPM_BINS:
        expected = F.adaptive_avg_pool2d(torch.from_numpy(features), bins).numpy()
        # float32 outputs; the sums are float64, so the only error is the final rounding to float32
        np.testing.assert_allclose(means[bins][0], expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("size", "tile"),
    [
        ((1, 1), (1, 1)),
        ((5, 7), (1, 1)),
        ((5, 7), (2, 3)),
        ((100, 37), (16, 9)),
        ((845, 564), (64, 300)),
        ((845, 564), (5000, 5000)),
        ((3024, 4032), (1000, 1000)),
    ],
)
def test_tiles_cover_the_frame_exactly_once_and_evenly(size, tile):
    tiles = plan_tiles(*size, tile)
    count = np.zeros(size, dtype=int)
    for region in tiles:
        count[region.slices] += 1
        assert 1 <= region.height <= tile[0] and 1 <= region.width <= tile[1]
    assert (count == 1).all()
    assert max(r.height for r in tiles) - min(r.height for r in tiles) <= 1
    assert max(r.width for r in tiles) - min(r.width for r in tiles) <= 1


def test_windows_have_one_size_and_keep_a_halo_or_the_frame_border_around_their_tile():
    assert Region(2, 10, 8, 20).window(16, 20, 9, 30) == Region(0, 5, 9, 25)
    assert Region(0, 0, 4, 4).window(10, 10, 100, 100) == Region(0, 0, 10, 10)  # the extra goes inwards
    assert Region(96, 96, 100, 100).window(10, 10, 100, 100) == Region(90, 90, 100, 100)
    rng = np.random.default_rng(7)
    for _ in range(200):
        height, width, halo = (int(v) for v in rng.integers(1, 60, 3))
        tiles = plan_tiles(height, width, (int(rng.integers(1, 40)), int(rng.integers(1, 40))))
        rows, cols = max(t.height for t in tiles) + 2 * halo, max(t.width for t in tiles) + 2 * halo
        for tile in tiles:
            window = tile.window(rows, cols, height, width)
            assert (window.height, window.width) == (min(rows, height), min(cols, width))
            assert window.top == 0 or tile.top - window.top >= halo
            assert window.left == 0 or tile.left - window.left >= halo
            assert window.bottom == height or window.bottom - tile.bottom >= halo
            assert window.right == width or window.right - tile.right >= halo


@pytest.mark.parametrize("full", [2, 7, 37, 1081])
@pytest.mark.parametrize("bins", PPM_BINS)
def test_align_corners_weights_equal_pytorch_upsampling(full, bins):
    """Any run of rows of the upsampled map, from the small map and the rows' position alone."""
    small = torch.rand(1, 2, bins, 3)
    expected = F.interpolate(small, (full, 3), mode="bilinear", align_corners=True)[0, :, :, :]
    for start, count in [(0, full), (0, 1), (full // 3, max(1, full // 2)), (full - 1, 1)]:
        rows = align_corners_weights(torch.tensor(start), count, torch.tensor(full), bins, small)
        got = torch.einsum("hb,cbw->chw", rows, small[0])
        torch.testing.assert_close(got, expected[:, start : start + count], rtol=0, atol=1e-6)


def test_split_halos_are_the_receptive_radii(released_enhancer):
    """Measured by autograd: how far an output pixel's gradient reaches in the input of each part."""
    model = released_enhancer.model
    head, tail = SplitHead(model), SplitTail(model)
    size = 41
    image = torch.rand(1, 3, size, size, requires_grad=True)
    head(image)[0, :, size // 2, size // 2].sum().backward()
    features = head(torch.rand(1, 3, size, size)).detach().requires_grad_()
    pooled = [F.adaptive_avg_pool2d(features.detach(), b) for b in PPM_BINS]
    centre = tail(features, *pooled, torch.tensor([0, 0, size, size]))[0, 0, size // 2, size // 2]
    assert centre > 0  # a real light map: the final ReLU passes the gradient
    centre.backward()
    for module, grad in ((head, image.grad), (tail, features.grad)):
        rows = torch.nonzero(grad.abs().sum(dim=(0, 1, 3))).flatten()
        assert receptive_radius(module) == size // 2 - int(rows.min()) == int(rows.max()) - size // 2


def test_split_in_pytorch_equals_the_full_network(released_enhancer):
    model = released_enhancer.model
    image = torch.rand(2, 3, 67, 93)
    with torch.no_grad():
        features = SplitHead(model)(image)
        pooled = [F.adaptive_avg_pool2d(features, b) for b in PPM_BINS]
        light_map = SplitTail(model)(features, *pooled, torch.tensor([0, 0, 67, 93]))
        torch.testing.assert_close(light_map, model(image), rtol=0, atol=1e-6)


# --- the exported split model ---------------------------------------------------------------------------------------


def test_split_export_records_its_part_halo_and_weights(split_paths):
    halos = {}
    for path, part in zip(split_paths, ("head", "tail"), strict=True):
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta[META_SPLIT_PART] == part and meta["cliplit.weights_sha256"] == SHA
        halos[part] = int(meta[META_HALO])
    assert halos == {"head": 5, "tail": 12}  # 5 and 12 padded 3×3 convolutions, as measured above
    assert split_paths == cached_split_paths(SHA)


def test_split_models_are_cached_and_built_the_same_from_an_onnx_export_or_the_weights(
    split_paths, float_onnx, uint8_onnx, monkeypatch, tmp_path
):
    stamps = [p.stat().st_mtime_ns for p in split_paths]
    assert ensure_split("clip-lit") == split_paths
    assert ensure_split(float_onnx) == split_paths  # the export records the same weights' SHA-256
    assert [p.stat().st_mtime_ns for p in split_paths] == stamps  # reused, not built again
    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path))  # an empty cache: each model file alone makes the split
    for model in (float_onnx, uint8_onnx):
        made = ensure_split(model)
        assert made == cached_split_paths(SHA) and made[0].parent == tmp_path / "models"
        for ours, theirs in zip(made, split_paths, strict=True):  # the same graph and weights (names may differ)
            ours, theirs = onnx.load(str(ours)).graph, onnx.load(str(theirs)).graph
            assert [n.op_type for n in ours.node] == [n.op_type for n in theirs.node]
            weights = [[onnx.numpy_helper.to_array(i) for i in graph.initializer] for graph in (ours, theirs)]
            assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))
        for path in made:
            path.unlink()


def test_a_model_without_a_split_is_a_clear_error(tmp_path, monkeypatch, released_weights):
    from cliplit.runtime.models import ensure_onnx

    monkeypatch.setenv("CLIPLIT_HOME", str(tmp_path / "home"))  # no cached split to fall back on
    with pytest.raises(CliplitError, match="student, which runs whole frames"):
        ensure_split(ensure_onnx("clip-lit-rt"))
    proto = onnx.load(str(ensure_onnx(released_weights)))
    del proto.graph.node[5:]
    onnx.save(proto, str(tmp_path / "cut.onnx"))
    with pytest.raises(CliplitError, match=r"cannot split .*cut\.onnx for tiled inference"):
        ensure_split(tmp_path / "cut.onnx")


# --- tiled == untiled -----------------------------------------------------------------------------------------------


def _untiled_light_map(float_onnx, frame: np.ndarray) -> np.ndarray:
    backend = open_backend(float_onnx, "onnxruntime")
    return backend.run(model_input_from_bgr("float", frame[None]))["light_map"][0, 0]


@pytest.fixture(scope="module")
def untiled_light_map(float_onnx, odd_photo) -> np.ndarray:
    return _untiled_light_map(float_onnx, odd_photo)


@pytest.mark.parametrize("tile", [(40, 50), (187, 60), (17, 281)], ids=["5x6 tiles", "one row", "one column"])
def test_tiled_light_map_equals_the_untiled_one_on_a_real_photo(split, untiled_light_map, odd_photo, tile):
    """Several tiles (down to smaller than the halos), every frame border touched, bins straddling tiles."""
    got = tiled_light_map(split, odd_photo, tile, pooling_tile=(tile[1], tile[0]))
    assert got.shape == untiled_light_map.shape
    assert np.abs(got - untiled_light_map).max() <= 2e-6  # float rounding: ~3e-7 measured, a model error is ~1e-2


def test_naive_tiling_would_not_be_exact(split_paths, untiled_light_map, odd_photo):
    """The exactness test above can fail: without halos the same tiles are visibly wrong."""
    naive = SplitModel(*split_paths)
    naive.head_halo = naive.tail_halo = 0
    assert np.abs(tiled_light_map(naive, odd_photo, (40, 50)) - untiled_light_map).max() > 1e-3


def test_enhancer_tiles_give_the_untiled_frame(split_paths, float_onnx, untiled_light_map, odd_photo):
    """Through the API, forced into tiles: the light map applied tile by tile equals applying the untiled one."""
    tiled = Enhancer(open_backend(float_onnx, "onnxruntime"), tiling=open_tiling(float_onnx, tile=(64, 80))).enhance(
        odd_photo
    )
    expected = apply_light_map_bgr8(odd_photo, untiled_light_map)
    difference = np.abs(tiled.astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-4  # a level where L sits on a rounding boundary


@pytest.mark.parametrize("options", [{"scale": 0.5}, {"temporal_smoothing": 0.9}])
def test_tiled_scale_and_smoothing_match_untiled(split_paths, float_onnx, odd_photo, options):
    """The paths that need the whole light map: computed in tiles, then upsampled or smoothed as usual."""
    tiled = Enhancer(open_backend(float_onnx, "onnxruntime"), tiling=open_tiling(float_onnx, tile=(40, 50)), **options)
    untiled = Enhancer(open_backend(float_onnx, "onnxruntime"), **options)
    frames = [odd_photo[:90, :120], odd_photo[5:95, 3:123]]  # smoothing: the second frame sees the first's state
    for frame in frames if "temporal_smoothing" in options else frames[:1]:
        assert np.abs(tiled.enhance(frame).astype(int) - untiled.enhance(frame)).max() <= 1


def test_tiled_small_photo_reproduces_the_official_output(split_paths, float_onnx):
    enhancer = Enhancer(
        open_backend(float_onnx, "onnxruntime"), tiling=open_tiling(float_onnx, tile=(430, 290))
    )  # 2×2 tiles
    assert psnr(enhancer.enhance(read_image(photo(SMALL_PHOTO))), read_image(reference(SMALL_PHOTO))) >= 50.0


# --- the memory budget ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"), [("2G", 2 << 30), ("512M", 512 << 20), ("1.5GiB", 3 << 29), ("64k", 65536), ("1000", 1000)]
)
def test_memory_sizes_parse(text, size):
    assert parse_memory_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "-1G", "0", "2X", "two gigabytes", "nan"])
def test_bad_memory_sizes_are_clear_errors(text):
    with pytest.raises(CliplitError, match="--max-memory"):
        parse_memory_size(text)


@pytest.mark.parametrize("size", [(3024, 4032), (100, 8000), (8000, 100), (600, 600)])
@pytest.mark.parametrize("room", [50 << 20, 500 << 20, 5 << 30])
def test_tiles_fit_the_room(size, room):
    rows, cols = fit_tile(*size, room, 17)
    assert 0 < rows <= size[0] and 0 < cols <= size[1]
    assert (rows + 34) * (cols + 34) * TILED_BYTES_PER_PIXEL <= room
    assert rows == size[0] or cols == size[1] or abs(rows - cols) <= 1  # square unless the frame is narrower


def test_budget_decides_per_frame_size(split, monkeypatch):
    monkeypatch.setattr(tiling_module, "resident_memory", lambda: 200 << 20)  # what a CLI run holds, not pytest
    loads = []

    def load() -> SplitModel:
        loads.append(1)
        return split

    assert Tiling(load, 1 << 50).plan(3024, 4032) is None and not loads  # untiled: nothing loaded
    tiling = Tiling(load, 2 << 30)
    rows, cols = tiling.plan(3024, 4032)
    assert MIN_TILE <= rows < 3024 and MIN_TILE <= cols <= 4032
    assert tiling.plan(3024, 4032) == (rows, cols) and tiling.plan(20, 30) is None
    assert Tiling(load, 100 << 30).plan(20000, 20000) == (MAX_TILE, MAX_TILE)  # a large budget is not used up
    with pytest.raises(CliplitError, match="too small for 4032x3024"):
        Tiling(load, 100 << 20).plan(3024, 4032)


def test_without_a_split_model_the_default_budget_warns_and_an_explicit_one_fails(monkeypatch, capsys):
    monkeypatch.setattr(tiling_module, "resident_memory", lambda: 200 << 20)

    def unavailable() -> SplitModel:
        raise CliplitError("no split model here")

    assert Tiling(unavailable).plan(100_000, 100_000) is None  # default budget: untiled, as before tiling existed
    assert "warning: no split model here; running untiled" in capsys.readouterr().err
    with pytest.raises(CliplitError, match="no split model here"):
        Tiling(unavailable, 2 << 30).plan(100_000, 100_000)


def test_which_models_tile():
    from cliplit.runtime.backends.torch import TorchOptions

    assert open_tiling("model.engine") is None  # a TensorRT profile bounds the frame size
    assert open_tiling("clip-lit", TorchOptions(padding="train")) is None  # the split model has the test padding
    assert isinstance(open_tiling("clip-lit", TorchOptions(threads=1), 1 << 30), Tiling)
    assert open_tiling(None, max_memory=123 << 20).budget == 123 << 20


def test_a_student_runs_whole_frames_within_the_budget_or_says_why(monkeypatch, capsys):
    monkeypatch.setattr(tiling_module, "resident_memory", lambda: 200 << 20)
    student = open_tiling("clip-lit-rt", max_memory=1 << 30)
    assert student.untiled_bytes_per_pixel == tiling_module.STUDENT_BYTES_PER_PIXEL
    assert student.plan(3024, 4032) is None  # 12 MP: about 0.8 GiB, whole
    with pytest.raises(CliplitError, match=r"6000x8000 frames need about .* a distilled student runs whole frames"):
        student.plan(8000, 6000)
    assert open_tiling("clip-lit-rt", max_memory=8 << 30).plan(8000, 6000) is None  # 48 MP: about 3.3 GiB
    with pytest.raises(CliplitError, match="no split for tiled inference"):
        student.split  # noqa: B018
    assert open_tiling("clip-lit-rt").plan(100_000, 100_000) is None  # the default budget only warns
    assert "a distilled student runs whole frames" in capsys.readouterr().err


def test_a_batch_in_tiles_equals_frame_by_frame(split_paths, float_onnx, odd_photo):
    enhancer = Enhancer(open_backend(float_onnx, "onnxruntime"), tiling=open_tiling(float_onnx, tile=(50, 60)))
    frames = [odd_photo[:70, :90], odd_photo[100:170, 150:240]]
    for got, frame in zip(enhancer.enhance_batch(frames), frames, strict=True):
        assert np.array_equal(got, enhancer.enhance(frame))


def test_max_memory_flag_is_checked_before_any_work(tmp_path, capsys):
    from cliplit.runtime.cli import main

    assert main(["enhance", str(tmp_path / "missing.jpg"), "-o", str(tmp_path), "--max-memory", "lots"]) == 2
    assert "--max-memory 'lots': not a memory size" in capsys.readouterr().err
