"""`tiltkit demo --quick` end to end: both data sets, the figure and the metrics file in the agreed shape."""

from __future__ import annotations

import json

import pytest

from tiltkit.cli import main


@pytest.mark.slow
def test_quick_demo_writes_figure_and_metrics(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"25gaussians", "swissroll"}
    assert set(metrics["25gaussians"]["vae"]) == set(metrics["25gaussians"]["tilted"]) == {"modes", "hq", "hq4", "mmd", "emd"}
    assert set(metrics["swissroll"]["tilted"]) == {"mmd", "emd"}
    assert 0 <= metrics["25gaussians"]["tilted"]["hq"] <= 1
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for d in metrics:
        assert (out / d / "tilt" / "config.yaml").is_file()
    assert main(["demo", "--out", str(out), "--quick"]) == 2  # never over an existing demo


@pytest.mark.slow
@pytest.mark.parametrize("base", ["realnvp", "glf-mlp"])
def test_quick_demo_on_other_bases(tmp_path, base):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick", "--quiet", "--base", base]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["25gaussians"]) == {base, "tilted"}
    for d in metrics:
        assert (out / d / base / "config.yaml").is_file() and (out / d / "tilt" / "config.yaml").is_file()
