"""The step-speed benchmark runs end to end and writes well-formed JSON (no timing targets asserted).

Only AdamW is measured: its fused path is torch's own kernel, so nothing is compiled here.
"""
import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "step_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("step_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_step_speed_smoke(tmp_path, capsys):
    out = tmp_path / "step_speed.json"
    assert load_benchmark().main(["--json", str(out), "--params", "40000", "--steps", "7",
                                  "--eager-steps", "1", "--only", "adamw"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert {"machine", "params", "baseline", "optimizers", "targets"} <= set(result)
    assert result["params"] == 40000
    assert {"torch", "threads", "cpu"} <= set(result["machine"])
    assert positive(result["baseline"]["ms_per_step"]) and positive(result["baseline"]["gbps"])
    assert list(result["optimizers"]) == ["adamw"]
    row = result["optimizers"]["adamw"]
    for key in ("ms_per_step", "gbps", "ratio_vs_torch_fused_adamw", "bandwidth_ratio_vs_torch_fused_adamw",
                "ms_per_step_checked", "ms_per_step_eager"):
        assert positive(row[key]), key
    assert row["state_bytes_per_param"] == 8.0  # exp_avg and exp_avg_sq, fp32
    assert math.isfinite(row["compile_s"]) and row["compile_s"] >= 0
    target = result["targets"]["adamw.ratio_vs_torch_fused_adamw"]
    assert {"value", "threshold", "pass"} <= set(target) and isinstance(target["pass"], bool)
    assert "targets:" in capsys.readouterr().out
    assert not list(tmp_path.glob(".step_speed.*"))  # the temporary file was renamed away
