"""The matrix-speed benchmark runs end to end and writes well-formed JSON (no timing targets asserted).

Tiny shapes (the hidden `--shapes small`) and eager paths only (the hidden `--eager-only`), so that
nothing is compiled and the test takes seconds.
"""
import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "matrix_speed.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("matrix_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive(x):
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_matrix_speed_smoke(tmp_path, capsys):
    out = tmp_path / "matrix_speed.json"
    bench = load_benchmark()
    assert bench.main(["--json", str(out), "--shapes", "small", "--eager-only", "--steps", "2", "--soap-steps", "1",
                       "--ns-reps", "1", "--gemm-reps", "1"]) == 0  # fmt: skip
    result = json.loads(out.read_text())
    assert {"machine", "shapes", "params", "gemm", "newton_schulz", "optimizers", "targets"} <= set(result)
    assert result["params"] == 2 * 32 * 32 + 32 * 64
    assert set(result["newton_schulz"]) == {"float32", "bfloat16", "float32_gram", "bfloat16_gram"}
    for key in result["newton_schulz"]:
        dtype = key.split("_")[0]
        assert positive(result["gemm"][dtype]["gflops"])
        ns = result["newton_schulz"][key]
        assert ns["flops"] == sum(bench.ns_flops(s) for s in result["shapes"])
        assert positive(ns["gflops"]) and positive(ns["fraction_of_gemm"])
    # exact count for one 32x64 matrix: 5 * (4 m^2 n + 2 m^3 + 3 m^2 + 2 m n), m = 32, n = 64
    assert bench.ns_flops((64, 32)) == 5 * (4 * 32 * 32 * 64 + 2 * 32**3 + 3 * 32 * 32 + 2 * 32 * 64)

    rows = result["optimizers"]
    assert set(rows) == {"torch_muon", "muon", "normuon", "soap", "conda"}
    assert positive(rows["torch_muon"]["ms_per_step"])
    assert set(rows["muon"]["configs"]) == {"eager_float32", "eager_bfloat16", "eager_float32_gram", "eager_bfloat16_gram"}
    assert set(rows["normuon"]["configs"]) == set(rows["muon"]["configs"])
    for cfg, r in rows["muon"]["configs"].items():
        assert positive(r["ms_per_step"]) and positive(r["ratio_vs_torch"]), cfg
        assert r["state_bytes_per_param"] == 4.0  # the momentum buffer, fp32
    for cfg, r in rows["normuon"]["configs"].items():
        assert positive(r["ms_per_step"]) and positive(r["ratio_vs_muon"]), cfg
        assert r["state_bytes_per_param"] == 4.0 + 4.0 * (2 * 32 + 32) / result["params"]  # + one fp32 per row
    assert rows["soap"]["state_bytes_per_param"] > 4.0 and positive(rows["soap"]["ms_per_step"])
    assert positive(rows["conda"]["ms_per_step"])
    for key in ("ns.float32.fraction_of_gemm", "ns.bfloat16.fraction_of_gemm", "muon.best.ratio_vs_torch",
                "normuon.same_config.ratio_vs_muon"):
        t = result["targets"][key]
        assert positive(t["value"]) and isinstance(t["pass"], bool), key
    assert "targets:" in capsys.readouterr().out
    assert not list(tmp_path.glob(".matrix_speed.*"))  # the temporary file was renamed away
