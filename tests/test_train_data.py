"""Training data: folder listing, RGB loading, augmentation, and batches that depend only on (seed, stream, step)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from cliplit.core.errors import CliplitError
from cliplit.train.data import (
    Augmentation,
    AugmentSpec,
    StepBatches,
    apply_augmentation,
    apply_dihedral,
    batch_rows,
    list_images,
    load_rgb,
    sample_augmentation,
)


def write_png(path: Path, bgr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), bgr)
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for name in ("b/2.png", "a.jpg", "b/c/1.png", "d.png"):
        write_png(tmp_path / "imgs" / name, rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"


def test_list_images_is_recursive_sorted_and_fails_clearly(folder: Path, tmp_path: Path) -> None:
    names = [p.relative_to(folder).as_posix() for p in list_images(folder, "--backlit")]
    assert names == ["a.jpg", "b/2.png", "b/c/1.png", "d.png"]
    with pytest.raises(CliplitError, match=r"--backlit folder .* does not exist"):
        list_images(tmp_path / "missing", "--backlit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CliplitError, match=r"--well-lit folder .* holds no images"):
        list_images(tmp_path / "empty", "--well-lit")


def test_load_rgb_is_rgb_in_unit_range_and_square(tmp_path: Path) -> None:
    red = np.zeros((20, 30, 3), dtype=np.uint8)
    red[:, :, 2] = 255  # BGR red
    image = load_rgb(write_png(tmp_path / "red.png", red), 8)
    assert image.shape == (3, 8, 8) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.ones(8, 8)) and image[1:].abs().max() == 0


def test_dihedral_symmetries_are_the_eight_symmetries_of_a_square() -> None:
    image = torch.arange(9.0).reshape(1, 3, 3)
    symmetries = [apply_dihedral(image, s) for s in range(8)]
    assert torch.equal(symmetries[0], image)
    assert len({tuple(s.flatten().tolist()) for s in symmetries}) == 8
    assert torch.equal(symmetries[4], image.flip(-1)) and torch.equal(symmetries[1], torch.rot90(image, 1, (-2, -1)))


def test_augmentation_is_shared_within_a_row_and_keeps_shapes() -> None:
    generator = torch.Generator().manual_seed(0)
    row = torch.rand(1, 1, 3, 16, 16, generator=generator)
    images = torch.cat([row.expand(1, 3, 3, 16, 16), torch.rand(1, 3, 3, 16, 16, generator=generator)])
    params = Augmentation(torch.tensor([5, 2]), torch.tensor([[1.2, 0.9], [1.0, 1.0]]), torch.tensor([10.0, -7.0]))
    out = apply_augmentation(images, params)
    assert out.shape == images.shape
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[0, 2])  # one transform per row
    assert not torch.allclose(out[0, 0], images[0, 0])
    identity = Augmentation(torch.zeros(2, dtype=torch.long), torch.ones(2, 2), torch.zeros(2))
    assert torch.equal(apply_augmentation(images, identity), images)


def test_batch_rows_cut_each_epoch_as_a_dataloader_without_drop_last() -> None:
    """BAID's 380 images in batches of 8: 47 full batches and one of 4 per epoch, every image once (the official
    loader's 48 iterations per epoch); the next epoch is a fresh permutation."""
    batches = [batch_rows(380, 8, step, seed=7, stream="s", rank=0, world=1) for step in range(49)]
    assert [len(rows) for rows in batches[:48]] == [8] * 47 + [4]
    assert sorted(torch.cat(batches[:48]).tolist()) == list(range(380))
    assert len(batches[48]) == 8 and not torch.equal(batches[48], batches[0])
    assert torch.equal(batch_rows(380, 8, 4, 7, "s", 0, 1), batches[4])
    assert not torch.equal(batch_rows(380, 8, 4, 8, "s", 0, 1), batches[4])
    assert batch_rows(2, 5, 0, seed=0, stream="s", rank=0, world=1).tolist() in ([0, 1], [1, 0])  # one short batch


def test_batch_rows_split_each_global_batch_between_ranks() -> None:
    """20 images, 2 ranks, batches of 3: each rank's 10 rows in batches of 3, 3, 3, 1; the ranks' slices are
    disjoint and together cover the epoch once. 21 images: the epoch wraps round by one row (as DistributedSampler
    pads) so both ranks take 11."""
    for n, sizes in ((20, [3, 3, 3, 1]), (21, [3, 3, 3, 2])):
        rank0 = [batch_rows(n, 3, step, seed=7, stream="s", rank=0, world=2) for step in range(4)]
        rank1 = [batch_rows(n, 3, step, seed=7, stream="s", rank=1, world=2) for step in range(4)]
        assert [len(rows) for rows in rank0] == [len(rows) for rows in rank1] == sizes
        seen = torch.cat(rank0 + rank1).tolist()
        assert set(seen) == set(range(n)) and len(seen) == n + (n % 2)


def test_step_batches_are_a_pure_function_of_the_step(folder: Path) -> None:
    paths = list_images(folder, "x")
    spec = AugmentSpec("full", (0.7, 1.3), 0.5, 0.5, 20.0)

    def batches() -> StepBatches:
        return StepBatches([paths, paths], partners=paths, size=8, batch_size=2, seed=3, stream="r/1", augment=spec)

    first, again = batches()[5], batches()[5]
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert first["images"].shape == (2, 3, 3, 8, 8)  # rows x (two columns + partner) x RGB
    assert torch.equal(first["images"][:, 0], first["images"][:, 1])  # aligned columns, one augmentation per row
    assert not torch.equal(first["images"], batches()[6]["images"])
    light = StepBatches([paths], size=8, batch_size=2, seed=3, stream="r/1", augment=spec, load=False)[5]
    assert "images" not in light and torch.equal(light["rows"], first["rows"])
    dihedral = StepBatches([paths], size=8, batch_size=4, seed=3, stream="d", augment=AugmentSpec("dihedral"))[0]
    unchanged = torch.stack([load_rgb(paths[int(r)], 8) for r in dihedral["rows"]])
    pairs = zip(unchanged, dihedral["symmetry"], strict=True)
    expected = torch.stack([apply_dihedral(img, int(s)) for img, s in pairs])
    assert torch.equal(dihedral["images"][:, 0], expected)  # no zoom or rotation: cached features stay exact


@pytest.mark.parametrize(("zoom", "low", "high"), [((0.7, 1.3), 0.7, 1.3), ((0.5, 1.5), 0.5, 1.5)])
def test_augmentation_is_drawn_as_the_official_loaders_draw_it(zoom: tuple[float, float], low: float, high: float):
    """Over 200,000 draws: each of the 8 symmetries 1/8 of the time; a zoom 30 % of the time, its two factors
    independent and uniform in the range (mean (low + high) / 2, variance (high - low)^2 / 12); independently a
    rotation 30 % of the time, uniform in ±90 degrees (variance 180^2 / 12 = 2,700). Bounds: 4 standard errors."""
    n = 200_000
    draws = sample_augmentation(AugmentSpec("full", zoom), n, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws.symmetry, minlength=8).double() / n
    assert torch.allclose(counts, torch.full((8,), 1 / 8, dtype=torch.float64), atol=4 * (1 / 8 * 7 / 8 / n) ** 0.5)
    zoomed = (draws.zoom != 1.0).any(dim=1)
    rotated = draws.angle != 0.0
    for share in (zoomed.double().mean(), rotated.double().mean()):
        assert share.item() == pytest.approx(0.3, abs=4 * (0.3 * 0.7 / n) ** 0.5)
    assert (zoomed & rotated).double().mean().item() == pytest.approx(0.09, abs=4 * (0.09 * 0.91 / n) ** 0.5)
    factors = draws.zoom[zoomed].double()
    assert factors.min() >= low and factors.max() <= high
    assert factors.mean(dim=0).tolist() == pytest.approx([(low + high) / 2] * 2, abs=0.005)
    assert factors.var(dim=0).tolist() == pytest.approx([(high - low) ** 2 / 12] * 2, rel=0.03)
    assert abs(torch.corrcoef(factors.T)[0, 1].item()) < 0.02  # one factor per axis
    angles = draws.angle[rotated].double()
    assert angles.abs().max() <= 90.0 and angles.mean().item() == pytest.approx(0.0, abs=0.5)
    assert angles.var().item() == pytest.approx(2700.0, rel=0.03)


def official_warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """OpenCV's warp with the official flags: bilinear, borders reflected (BORDER_REFLECT)."""
    size = image.shape[0]
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize(("zoom", "angle"), [((1.3, 0.8), 0.0), ((0.6, 0.55), 0.0), ((1.0, 1.0), 37.0)])
def test_zoom_and_rotation_warp_as_opencv_does_with_the_official_matrices(zoom: tuple[float, float], angle: float):
    """The official zoom matrix maps a pixel p to Z (p - o) + o with o = size / 2 + 0.5 on both axes (its
    transform_matrix_offset_center), the rotation is cv2.getRotationMatrix2D((size // 2, size // 2), angle, 1); on a
    smooth image the two resamplers agree to OpenCV's 1/32-pixel position rounding."""
    size = 64
    y, x = np.mgrid[0:size, 0:size] / size
    image = np.stack([np.sin(3 * x + 1), np.cos(2 * y), np.sin(2 * x + 3 * y)], axis=-1).astype(np.float32)
    o = size / 2 + 0.5
    if angle:
        matrix = cv2.getRotationMatrix2D((size // 2, size // 2), angle, 1.0)
    else:
        matrix = np.array([[zoom[0], 0, o - zoom[0] * o], [0, zoom[1], o - zoom[1] * o]])
    expected = official_warp(image, matrix)
    params = Augmentation(torch.zeros(1, dtype=torch.long), torch.tensor([zoom]), torch.tensor([angle]))
    actual = apply_augmentation(torch.from_numpy(image).permute(2, 0, 1)[None, None], params)[0, 0]
    assert np.abs(actual.permute(1, 2, 0).numpy() - expected).max() < 5e-3
