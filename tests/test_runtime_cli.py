"""`cliplit enhance` on images: references, names, formats, bad inputs, existing outputs, a full disk."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import SMALL_PHOTO, photo, reference
from runtime_helpers import enhance_on_small_disk

from cliplit.core.images import read_image
from cliplit.core.metrics import psnr
from cliplit.runtime.cli import main
from cliplit.runtime.enhancer import Enhancer


def enhance(*argv: object) -> int:
    return main(["enhance", *map(str, argv), "--no-progress"])


@pytest.fixture
def crops(tmp_path):
    """A folder of small images in every awkward form: grey, alpha, 16-bit, plus a corrupt and a too-small one."""
    folder = tmp_path / "in"
    folder.mkdir()
    bgr = read_image(photo(SMALL_PHOTO))[300:396, 200:328]
    cv2.imwrite(str(folder / "colour.jpg"), bgr)
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "alpha.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(folder / "deep.tif"), bgr.astype(np.uint16) * 257)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    cv2.imwrite(str(folder / "tiny.png"), bgr[:1, :5])
    (folder / "notes.txt").write_text("not an image; ignored in a folder")
    return folder


def test_image_mode_reproduces_the_official_output(float_onnx, tmp_path):
    out = tmp_path / "out"
    assert enhance(photo(SMALL_PHOTO), "-o", out, "--model", float_onnx) == 0
    assert psnr(read_image(out / f"{SMALL_PHOTO}.png"), read_image(reference(SMALL_PHOTO))) >= 50.0


def test_folder_writes_what_it_can_and_lists_what_failed(crops, float_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    assert enhance(crops, "-o", out, "--model", float_onnx) == 2
    err = capsys.readouterr().err
    assert "2 of 6 images failed (the others were written)" in err
    assert "corrupt.jpg: not a readable image" in err and "tiny.png" in err and "too small" in err
    assert sorted(p.name for p in out.iterdir()) == ["alpha.png", "colour.png", "deep.png", "grey.png"]
    with Enhancer.open(float_onnx) as enhancer:
        for name in ("alpha", "colour", "deep", "grey"):
            source = next(crops.glob(f"{name}.*"))
            assert np.array_equal(read_image(out / f"{name}.png"), enhancer.enhance(read_image(source))), name


def test_single_image_to_a_file_in_another_format(crops, float_onnx, tmp_path):
    out = tmp_path / "result.jpg"
    assert enhance(crops / "colour.jpg", "-o", out, "--model", float_onnx, "--scale", "0.5") == 0
    assert read_image(out).shape == (96, 128, 3)


def test_ext_option_and_existing_outputs(crops, float_onnx, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "colour.webp").write_bytes(b"keep me")
    args = (crops / "colour.jpg", crops / "grey.png", "-o", out, "--model", float_onnx, "--ext", "webp")
    assert enhance(*args) == 2
    assert "colour.webp exists; pass --overwrite" in capsys.readouterr().err
    assert (out / "colour.webp").read_bytes() == b"keep me" and not (out / "grey.webp").exists()
    assert enhance(*args, "--overwrite") == 0
    assert read_image(out / "colour.webp").shape == (96, 128, 3) and (out / "grey.webp").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "nothing to enhance"),
        (["missing.jpg", "-o", "out"], "missing.jpg: no such file"),
        (["{in}/colour.jpg"], "give an output folder with -o"),
        (["{in}/colour.jpg", "{in}/grey.png", "-o", "{in}/colour.jpg"], "is a file"),
        (["{in}/colour.jpg", "-o", "{in}", "--ext", "jpg"], "would replace its own input"),
        (["{in}/colour.jpg", "-o", "out", "--ext", "docx"], "not an image format"),
        (["{in}/colour.jpg", "-o", "out", "--temporal-smoothing", "0.5"], "not images"),
        (["{in}/colour.jpg", "-o", "out", "--scale", "2"], "--scale must be in"),
        (["{in}/colour.jpg", "-o", "out", "--backend", "tensorrt"], "needs a TensorRT engine"),
        (["--camera", "0", "{in}/colour.jpg"], "either --camera or INPUT"),
        (["{in}/notes.txt", "-o", "x.mp4"], "not a readable video"),
        (["{in}/colour.jpg", "-o", "out", "--batch", "0"], "--batch must be at least 1, got 0"),
    ],
)
def test_bad_invocations_are_clear_errors(crops, float_onnx, tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    argv = [a.replace("{in}", str(crops)) for a in argv]
    assert enhance(*argv, "--model", float_onnx) == 2
    assert message in capsys.readouterr().err


def test_same_stem_in_two_formats_is_refused(crops, float_onnx, tmp_path, capsys):
    cv2.imwrite(str(crops / "colour.png"), read_image(crops / "colour.jpg"))
    assert enhance(crops / "colour.jpg", crops / "colour.png", "-o", tmp_path / "out", "--model", float_onnx) == 2
    assert "would both be written to" in capsys.readouterr().err


def test_uint8_model_with_scale_is_refused(crops, uint8_onnx, tmp_path, capsys):
    assert enhance(crops / "colour.jpg", "-o", tmp_path / "o", "--model", uint8_onnx, "--scale", "0.5") == 2
    assert "float-I/O model" in capsys.readouterr().err


def test_full_disk_while_writing_images(crops, float_onnx, tmp_path):
    disk = tmp_path / "disk"
    code, stderr, left = enhance_on_small_disk([crops / "colour.jpg", "-o", disk, "--model", float_onnx], disk, 8)
    assert code == 2, stderr
    assert f"cannot write {disk / 'colour.png'}: No space left on device" in stderr
    assert left == []


def test_the_student_runs_a_12_mp_photo_whole_and_a_budget_too_small_is_a_one_line_error(tmp_path, capsys):
    """The student was split as if it were the teacher above ~8 MP (AttributeError: 'StudentNet' object has no
    attribute 'cond1'), and --max-memory 1K gave a traceback too."""
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), cv2.resize(read_image(photo(SMALL_PHOTO)), (4032, 3024), interpolation=cv2.INTER_CUBIC))
    assert enhance(big, "-o", tmp_path / "out", "--model", "clip-lit-rt") == 0
    assert read_image(tmp_path / "out" / "big.png").shape == (3024, 4032, 3)
    capsys.readouterr()
    assert enhance(big, "-o", tmp_path / "out1k", "--model", "clip-lit-rt", "--max-memory", "1K") == 2
    err = capsys.readouterr().err
    assert "error: 1 of 1 image failed" in err and "big.png: 4032x3024 frames need about" in err
    assert "a distilled student runs whole frames" in err and "whole frames within a memory budget of 0 MiB" in err
    assert "Traceback" not in err and not (tmp_path / "out1k" / "big.png").exists()


# --- whole photos: alpha, 16 bits, subfolders, colour profile and EXIF ---------------------------------------------


@pytest.fixture
def crop() -> np.ndarray:
    return read_image(photo(SMALL_PHOTO))[300:396, 200:328]


def test_rgba_keeps_its_alpha_and_a_jpeg_output_says_it_was_dropped(crop, float_onnx, tmp_path, capsys):
    alpha = np.tile(np.arange(128, dtype=np.uint8) * 2, (96, 1))
    source = tmp_path / "logo.png"
    cv2.imwrite(str(source), np.dstack([crop, alpha]))
    assert enhance(source, "-o", tmp_path / "png", "--model", float_onnx) == 0
    written = cv2.imread(str(tmp_path / "png" / "logo.png"), cv2.IMREAD_UNCHANGED)
    assert written.shape == (96, 128, 4) and np.array_equal(written[:, :, 3], alpha)
    with Enhancer.open(float_onnx) as enhancer:
        assert np.array_equal(written[:, :, :3], enhancer.enhance(crop))
    assert "warning" not in capsys.readouterr().err
    assert enhance(source, "-o", tmp_path / "jpg", "--model", float_onnx, "--ext", "jpg") == 0
    err = capsys.readouterr().err
    assert f"warning: {tmp_path / 'jpg' / 'logo.jpg'}: alpha channel dropped: JPEG has none\n" in err
    assert err.count("warning") == 1


def test_16_bit_input_gives_16_bit_output_and_says_when_it_cannot(crop, float_onnx, uint8_onnx, tmp_path, capsys):
    deep = tmp_path / "in" / "deep.tif"
    deep.parent.mkdir()
    cv2.imwrite(str(deep), crop.astype(np.uint16) * 257)
    assert enhance(deep, "-o", tmp_path / "float", "--model", float_onnx) == 0
    written = cv2.imread(str(tmp_path / "float" / "deep.png"), cv2.IMREAD_UNCHANGED)
    assert written.dtype == np.uint16 and written.shape == (96, 128, 3)
    assert len(np.unique(written)) > 1000, "16-bit levels, not 8-bit ones scaled up"
    with Enhancer.open(float_onnx) as enhancer:
        eight_bit = enhancer.enhance(crop)
    assert np.abs(read_image(tmp_path / "float" / "deep.png").astype(int) - eight_bit).max() <= 1
    assert "warning" not in capsys.readouterr().err
    assert enhance(deep, "-o", tmp_path / "uint8", "--model", uint8_onnx) == 0
    err = capsys.readouterr().err
    assert "warning: 16-bit input written as 8-bit: the model's input and output are 8-bit (uint8 I/O)\n" in err
    assert cv2.imread(str(tmp_path / "uint8" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert enhance(deep, "-o", tmp_path / "jpg", "--model", float_onnx, "--ext", "jpg") == 0
    assert "deep.jpg: 16-bit input written as 8-bit: JPEG holds 8 bits per channel" in capsys.readouterr().err


def test_subfolders_are_named_when_skipped_and_mirrored_with_recursive(crop, float_onnx, tmp_path, capsys):
    tree = tmp_path / "trip"
    for folder in ("", "day1", "day1/beach", "day2", "day3", "day4"):
        (tree / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tree / folder / "shot.jpg"), crop[:64, :64])
    out = tree / "enhanced"  # inside the input: a second run must not enhance the first one's results
    assert enhance(tree, "-o", out, "--model", float_onnx) == 0
    err = capsys.readouterr().err
    assert f"{tree}: skipping 4 subfolders (day1, day2, day3, ...); --recursive enhances them too\n" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["shot.png"]
    assert enhance(tree, "-o", out, "--model", float_onnx, "--recursive", "--overwrite") == 0
    assert "skipping" not in capsys.readouterr().err
    expected = ["day1/beach/shot.png", "day1/shot.png", "day2/shot.png", "day3/shot.png", "day4/shot.png", "shot.png"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == expected


def test_a_folder_of_subfolders_only_points_to_recursive(crop, float_onnx, tmp_path, capsys):
    (tmp_path / "trip" / "day1").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "trip" / "day1" / "shot.jpg"), crop)
    assert enhance(tmp_path / "trip", "-o", tmp_path / "out", "--model", float_onnx) == 2
    assert (
        "no images in this folder" in (err := capsys.readouterr().err) and "--recursive looks in its 1 subfolder" in err
    )


def test_colour_profile_and_exif_survive_into_png_and_jpeg(crop, float_onnx, tmp_path, capsys):
    from PIL import Image
    from test_images import camera_exif, display_p3_like_profile, pillow_read

    profile = display_p3_like_profile()
    source = tmp_path / "phone.jpg"
    Image.fromarray(crop[:, :, ::-1]).save(source, quality=95, icc_profile=profile, exif=camera_exif(6))
    for ext in ("png", "jpg"):
        assert enhance(source, "-o", tmp_path / ext, "--model", float_onnx, "--ext", ext) == 0
        icc, exif, _ = pillow_read(tmp_path / ext / f"phone.{ext}")
        assert icc == profile, ext
        assert exif.get(0x010F) == "Apple" and exif.get(0x0112, 1) == 1, ext
        assert read_image(tmp_path / ext / f"phone.{ext}").shape == (128, 96, 3), "written upright"
    assert "warning" not in capsys.readouterr().err
