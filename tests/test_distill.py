"""`cliplit distill` end to end on a tiny synthetic set: the loss falls, the student exports and runs in the runtime,
resuming is exact, bad runs are refused; student checkpoints record their architecture."""

from __future__ import annotations

import argparse
import dataclasses

import cv2
import numpy as np
import pytest
import torch

from cliplit.core.contract import META_FIDELITY, META_TEACHER
from cliplit.core.errors import CliplitError
from cliplit.core.images import write_image
from cliplit.export.onnx_export import export_onnx
from cliplit.runtime.backends.onnxruntime import onnx_metadata
from cliplit.runtime.enhancer import Enhancer
from cliplit.train import distill as distill_module
from cliplit.train import distill_cli
from cliplit.train.checkpoint import CheckpointError, load_enhancer, save_enhancer
from cliplit.train.distill import DistillConfig, distill
from cliplit.train.network import LightMapNet, apply_light_map
from cliplit.train.student import StudentConfig, StudentNet


def _synthetic_photo(rng: np.random.Generator, height: int = 56, width: int = 72) -> np.ndarray:
    """A backlit-looking BGR frame: a bright sky gradient over a dark textured foreground with a bright object."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    sky = 180 + 60 * (1 - ys / height)
    horizon = height * rng.uniform(0.3, 0.6) + 6 * np.sin(xs / rng.uniform(4, 9))
    ground = 25 + 20 * rng.random((height, width))
    luma = np.where(ys < horizon, sky, ground)
    tint = rng.uniform(0.7, 1.1, size=3)
    image = np.clip(luma[..., None] * tint, 0, 255).astype(np.uint8)
    cv2.circle(image, (int(rng.integers(10, width - 10)), int(rng.integers(10, height - 10))), 6, (220, 230, 240), -1)
    return image


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: one thread avoids OpenMP's hand-offs, which dominate on the shared 2-core CI machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    for i in range(5):
        write_image(folder / f"p{i}.png", _synthetic_photo(rng))
    return folder


def _config(photos, tmp_path, **changes) -> DistillConfig:
    base = DistillConfig(
        teacher="clip-lit",
        images=(str(photos),),
        out=str(tmp_path / "run"),
        cache=str(tmp_path.parent / "distill-cache"),  # shared by the tests of this module: the teacher runs once
        val_fraction=0.2,
        val_size=64,
        samples_per_image=2,
        crop=40,
        scale_min=0.6,
        scale_max=1.2,
        epochs=4,
        batch=2,
        lr=5e-3,
        widths=(4, 8, 8, 8),
        device="cpu",
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture(scope="module")
def finished(photos, tmp_path_factory):
    """One uninterrupted run, shared by the tests that only read it."""
    tmp_path = tmp_path_factory.mktemp("full")
    config = _config(photos, tmp_path)
    return config, distill(config)


def test_loss_falls_and_validation_improves(finished):
    _, outcome = finished
    losses = [record["loss"] for record in outcome.history]
    psnrs = [record["val_psnr_mean"] for record in outcome.history]
    assert len(losses) == 4
    assert losses[-1] < 0.5 * losses[0], losses
    assert max(psnrs) > psnrs[0], psnrs
    assert outcome.best_psnr == max(psnrs)
    assert outcome.best.is_file() and (outcome.run_dir / "log.csv").is_file()


def test_student_exports_and_runs_in_the_runtime(finished, tmp_path):
    _, outcome = finished
    checkpoint = load_enhancer(outcome.best)
    assert isinstance(checkpoint.model, StudentNet) and checkpoint.model.config.widths == (4, 8, 8, 8)
    float_report = export_onnx(checkpoint, tmp_path / "student-float.onnx", io="float")  # verified down to 2x2
    uint8_report = export_onnx(checkpoint, tmp_path / "student-uint8.onnx", io="uint8")
    assert "random 2x2" in float_report.max_abs_diff and "random 2x2" in uint8_report.max_abs_diff
    metadata = onnx_metadata(float_report.path)
    assert metadata[META_TEACHER] == "clip-lit"
    assert "val_psnr_mean" in metadata[META_FIDELITY]
    rng = np.random.default_rng(3)
    for height, width in ((2, 2), (3, 5), (17, 31)):
        frame = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        rgb = torch.from_numpy(frame[..., ::-1].copy()).permute(2, 0, 1)[None].float() / 255.0
        with torch.no_grad():
            expected = apply_light_map(rgb, checkpoint.model(rgb))[0].permute(1, 2, 0).numpy()[..., ::-1]
        expected = np.floor(expected * 255.0 + 0.5)
        for model in (float_report.path, uint8_report.path):  # ONNX Runtime: OpenVINO refuses the student below ~8 px
            got = Enhancer.open(model, "onnxruntime").enhance(frame)
            assert got.shape == frame.shape
            assert np.abs(got.astype(float) - expected).max() <= 1.0


def test_resume_is_exact(photos, finished, tmp_path, monkeypatch):
    config, outcome = finished
    resumed_config = dataclasses.replace(config, out=str(tmp_path / "run"))
    real_finish = distill_module._finish_epoch

    def stop_after_two(run, *args):
        real_finish(run, *args)
        if run.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(distill_module, "_finish_epoch", stop_after_two)
    with pytest.raises(KeyboardInterrupt):
        distill(resumed_config)
    monkeypatch.setattr(distill_module, "_finish_epoch", real_finish)
    resumed = distill(resumed_config, resume=True)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in outcome.history]
    ours = torch.load(resumed.run_dir / "state.pt", weights_only=True)["student"]
    theirs = torch.load(outcome.run_dir / "state.pt", weights_only=True)["student"]
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_refuses_to_clobber_or_resume_a_different_run(finished):
    config, _ = finished
    with pytest.raises(CliplitError, match="already holds a distillation run"):
        distill(config)
    with pytest.raises(CliplitError, match=r"options differ.*lr"):
        distill(dataclasses.replace(config, lr=1e-3), resume=True)


def test_cli_defaults_match_the_config():
    parser = argparse.ArgumentParser()
    distill_cli.add_arguments(parser)
    args = parser.parse_args(["--images", "x", "--out", "y"])
    for field in dataclasses.fields(DistillConfig):
        if field.name in ("images", "out", "cache"):
            continue
        value = getattr(args, field.name)
        assert (tuple(value) if isinstance(value, list) else value) == field.default, field.name


def test_student_checkpoints_record_their_architecture(tmp_path):
    student = StudentNet(StudentConfig(widths=(4, 6, 8)))
    path = save_enhancer(student, tmp_path / "s.pth", source={"distilled_from": "clip-lit"})
    loaded = load_enhancer(path)
    assert isinstance(loaded.model, StudentNet) and loaded.model.config == student.config
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), student.eval()(x))
    teacher = load_enhancer(save_enhancer(LightMapNet("train"), tmp_path / "t.pth", padding="train"))
    assert isinstance(teacher.model, LightMapNet) and teacher.model.padding == "train"
    blob = torch.load(path, weights_only=True)
    blob["architecture"] = "mystery-net"
    torch.save(blob, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="unknown architecture 'mystery-net'"):
        load_enhancer(tmp_path / "bad.pth")
    blob["architecture"] = "clip-lit-student"  # the first design (cliplit 0.1.0's clip-lit-rt): re-distil
    torch.save(blob, tmp_path / "old.pth")
    with pytest.raises(CheckpointError, match=r"first student design.*distil it again with `cliplit distill`"):
        load_enhancer(tmp_path / "old.pth")
    blob["architecture"] = "clip-lit-student-2"
    blob["architecture_config"] = {"widths": [4]}
    torch.save(blob, tmp_path / "narrow.pth")
    with pytest.raises(CheckpointError, match="two or more positive channel counts"):
        load_enhancer(tmp_path / "narrow.pth")


def test_student_options_are_checked_before_any_work(capsys):
    from cliplit.runtime.cli import main

    for bad, message in ((["--widths", "8"], "two or more"), (["--widths", "8", "0"], "positive channel counts")):
        assert main(["distill", "--images", "nowhere", "--out", "nowhere", *bad]) == 2
        assert message in capsys.readouterr().err


def test_an_onnx_teacher_matches_the_pytorch_one(float_onnx, uint8_onnx, released_enhancer):
    """The float export runs as a teacher through ONNX Runtime (its light map); the uint8 export has none."""
    teacher = distill_module.load_teacher(str(float_onnx), torch.device("cpu"))
    rgb = _synthetic_photo(np.random.default_rng(1), 21, 34)[..., ::-1].copy()
    with torch.no_grad():
        expected = released_enhancer.model(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0)[0, 0]
    assert np.abs(teacher.light_map(rgb) - expected.numpy()).max() <= 1e-4
    with pytest.raises(CliplitError, match="no light_map output"):
        distill_module.load_teacher(str(uint8_onnx), torch.device("cpu"))


def test_the_bench_bills_each_row_the_flops_of_the_network_it_ran():
    from cliplit.benchmarks.flops import flops_per_frame
    from cliplit.benchmarks.registry import BACKENDS, scaled_entries
    from cliplit.benchmarks.suite import _models_by_backend

    scaled = scaled_entries(["onnxruntime-rt"], [0.5], "guided")
    entries = [BACKENDS["onnxruntime"], BACKENDS["onnxruntime-rt"], *scaled]
    teacher = load_enhancer("clip-lit").model
    models = _models_by_backend(entries, "clip-lit", teacher)
    assert models["onnxruntime"] is teacher
    student = models["onnxruntime-rt"]
    assert isinstance(student, StudentNet) and models["onnxruntime-rt@scale0.5"] is student
    teacher_flops, student_flops = flops_per_frame(teacher, 72, 128), flops_per_frame(student, 72, 128)
    assert teacher_flops == 555_264 * 72 * 128 + flops_per_frame(teacher, 1, 1) - 555_264  # pooled branches once
    assert 100 * student_flops < teacher_flops


def test_the_bench_runs_the_shipped_student_beside_the_teacher():
    from cliplit.benchmarks.registry import BACKENDS, SCALE_BASES, BenchContext

    backend = BACKENDS["onnxruntime-rt"].build(BenchContext(weights="clip-lit", device="cpu"))
    try:
        assert backend.io == "float" and "onnxruntime-rt" in SCALE_BASES
        frame = np.random.default_rng(2).random((1, 3, 9, 13), dtype=np.float32)
        outputs = backend.run(frame)
        with torch.no_grad():
            expected = load_enhancer("clip-lit-rt").model(torch.from_numpy(frame)).numpy()
        assert np.abs(outputs["light_map"] - expected).max() <= 1e-4
        assert outputs["enhanced"].shape == frame.shape
    finally:
        backend.close()


def _schedule_state(run_dir) -> dict:
    return torch.load(run_dir / "state.pt", weights_only=True)["schedule"]


def test_resume_with_more_epochs_extends_a_finished_run(photos, tmp_path, monkeypatch):
    """4 epochs of 4 batches, then --resume --epochs 5: 20 steps, where torch's one-cycle warm-up is one step long and
    divided 0 by 0 (the reported ZeroDivisionError). The run goes on from its 4th epoch on the schedule a 5-epoch run
    has from there, to that schedule's end."""
    config = _config(photos, tmp_path)
    first = distill(config)
    assert _schedule_state(first.run_dir)["total_steps"] == 16
    longer = dataclasses.replace(config, epochs=5)
    rates = []
    real_train_epoch = distill_module._train_epoch

    def record_rate(run, *args):
        rates.append(run.schedule.get_last_lr()[0])
        return real_train_epoch(run, *args)

    monkeypatch.setattr(distill_module, "_train_epoch", record_rate)
    extended = distill(longer, resume=True)
    assert extended.epochs_done == 5 and len(extended.history) == 5
    assert extended.history[:4] == first.history  # the four epochs done are kept, not retrained
    schedule = _schedule_state(extended.run_dir)
    assert (schedule["total_steps"], schedule["last_epoch"]) == (20, 20)
    planned = distill_module.Run(longer, 4, torch.device("cpu"))  # a run planned for 5 epochs, at step 16
    for _ in range(16):
        planned.optimiser.step()
        planned.schedule.step()
    assert rates == [pytest.approx(planned.schedule.get_last_lr()[0], rel=1e-9)]
    with pytest.raises(CliplitError, match="finished all 5 epochs; pass --epochs M > 5 to train further"):
        distill(longer, resume=True)


def test_resuming_a_finished_run_without_more_epochs_is_refused_before_any_work(finished, monkeypatch):
    config, _ = finished

    def no_teacher(*args):
        raise AssertionError("the teacher was loaded for a run that has nothing to do")

    monkeypatch.setattr(distill_module, "load_teacher", no_teacher)
    for epochs in (4, 3):
        with pytest.raises(CliplitError, match=r"the run in .* finished all 4 epochs; pass --epochs M > 4 to train"):
            distill(dataclasses.replace(config, epochs=epochs), resume=True)


def test_the_cli_refuses_a_finished_run_in_one_line(finished, capsys):
    from cliplit.runtime.cli import main

    config, _ = finished
    argv = ["distill", "--images", *config.images, "--out", config.out, "--cache", config.cache, "--resume"]
    for name in ("val_fraction", "val_size", "samples_per_image", "crop", "scale_min", "scale_max", "epochs"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(config, name))]
    argv += ["--batch", str(config.batch), "--lr", str(config.lr), "--device", "cpu", "--widths", "4", "8", "8", "8"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "finished all 4 epochs; pass --epochs M > 4 to train further" in err and "Traceback" not in err


def test_fewer_epochs_than_an_unfinished_run_is_planned_for_are_refused(finished, tmp_path):
    """A resume that forgets --epochs gets the default, which must not cut a longer run short."""
    config, outcome = finished
    halfway = torch.load(outcome.run_dir / "state.pt", weights_only=True)
    halfway["epoch"] = 2
    interrupted = dataclasses.replace(config, out=str(tmp_path / "run"))
    halfway["config"]["out"] = interrupted.out
    (tmp_path / "run").mkdir()
    torch.save(halfway, tmp_path / "run" / "state.pt")
    with pytest.raises(CliplitError, match=r"--epochs 3: it is planned for 4 epochs and has done 2; pass --epochs 4"):
        distill(dataclasses.replace(interrupted, epochs=3), resume=True)


def test_a_one_step_warm_up_does_not_divide_by_zero():
    """20 steps: torch's warm-up would be step 0 to step 0. Every other length keeps the 5 % warm-up exactly."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    schedule = distill_module.one_cycle(torch.optim.Adam([parameter]), 1e-2, 20)
    assert schedule.get_last_lr() == [pytest.approx(1e-2 / 25)]  # its one warm-up step starts the cycle
    for total in (19, 21, 400):
        schedule = distill_module.one_cycle(torch.optim.Adam([parameter]), 1e-2, total)
        assert schedule.state_dict()["_schedule_phases"][0]["end_step"] == 0.05 * total - 1
