"""export-engine's ONNX paths end to end, in-process: the default model, the OpenCV static model, refusals."""

from __future__ import annotations

import onnx
import pytest

from cliplit.export.cli import main


def test_export_engine_writes_a_verified_model_and_refuses_to_overwrite(tmp_path, capsys, released_weights):
    target = tmp_path / "clip-lit.onnx"
    assert main(["--weights", "clip-lit", "--onnx", str(target), "--io", "uint8"]) == 0
    assert "max |ONNX Runtime - PyTorch|" in capsys.readouterr().out
    meta = {p.key: p.value for p in onnx.load(str(target)).metadata_props}
    assert meta["cliplit.io"] == "uint8" and meta["cliplit.model_name"] == "clip-lit"
    before = target.read_bytes()
    assert main(["--weights", str(released_weights), "--onnx", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert target.read_bytes() == before


def test_opencv_static_export_has_a_fixed_input(tmp_path):
    target = tmp_path / "static.onnx"
    assert main(["--onnx", str(target), "--opencv-static", "24x40"]) == 0
    dims = onnx.load(str(target)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 24, 40]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--opencv-static", "24x40", "--io", "uint8"], "drop --engine and --io uint8"),
        (["--opencv-static", "1x40"], "too small"),
        (["--opencv-static", "big"], "HEIGHTxWIDTH"),
        (["--weights", "no-such-model"], "not found"),
    ],
)
def test_bad_options_fail_with_a_message_and_write_nothing(tmp_path, capsys, extra, message):
    target = tmp_path / "model.onnx"
    assert main(["--onnx", str(target), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not target.exists()
