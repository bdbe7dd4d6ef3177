"""The memory benchmark runs end to end and writes the JSON issue 6 asks for (no timing asserted)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"


def test_memory_benchmark_smoke(tmp_path):
    spec = importlib.util.spec_from_file_location("memory_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "memory.json"
    argv = ["--json", str(out), "--only", "adamw8bit,lion8bit,galore_adamw", "--dim", "64", "--layers", "1",
            "--vocab", "128", "--steps", "1", "--warmup", "1"]  # fmt: skip
    assert module.main(argv) == 0
    rows = json.loads(out.read_text())  # {optimizer: {precision: {...}}}
    meta = json.loads((tmp_path / "memory.meta.json").read_text())
    assert set(rows) == {"adamw8bit", "lion8bit", "galore_adamw"}
    for name, row in rows.items():
        assert {"fp32", "bf16", "8bit"} <= set(row)
        for prec, cell in row.items():
            assert {"state_bytes_per_param", "time_ratio_vs_fp32"} <= set(cell), (name, prec)
        assert row["fp32"]["time_ratio_vs_fp32"] == 1.0
        # bf16 halves fp32 state; 8-bit stores a quarter plus scales and the small fp32 tensors
        assert row["bf16"]["state_bytes_per_param"] == row["fp32"]["state_bytes_per_param"] / 2
        assert row["8bit"]["state_bytes_per_param"] < row["bf16"]["state_bytes_per_param"]
    assert rows["adamw8bit"]["fp32"]["state_bytes_per_param"] == 8.0
    assert "bitsandbytes" in rows["adamw8bit"]  # the reference is measured in the same run
    assert rows["galore_adamw"]["fp32"]["state_bytes_per_param"] <= rows["galore_adamw"]["fp32"]["expected_lowrank_bytes_per_param"]
    assert "adamw8bit.8bit.state_bytes_per_param<=2.05" in meta["targets"]
    assert meta["params"] > 0 and "cpu" in meta["machine"]
