"""Side-by-side table: `gantry bench conv` and PyTorch on the same layers, run one after the other.

    python benches/compare_conv.py --threads 2 [--rounds 3] [--gantry target/release/gantry]

This prints a markdown table of median ms for gantry, for PyTorch, and for the im2col+ndarray
baseline, with gantry's GFLOP/s and fraction of the measured FMA peak. The two benchmarks run
alternately for `--rounds` rounds and each row keeps its fastest round (the one least disturbed
by other load on a shared machine), so both sides are measured under the same conditions.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

here = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gantry", default=str(here.parent / "target/release/gantry"))
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    best_g, best_t, peak = {}, {}, 0.0
    for _ in range(args.rounds):
        for r in json.loads(subprocess.check_output(
                [args.gantry, "bench", "conv", "--json", "--threads", str(args.threads)])):
            key = (r["layer"], r["pass"])
            # The FMA peak is measured per run too; the least disturbed one is the peak.
            peak = max(peak, r["peak_gflops"])
            if key not in best_g or r["ms"] < best_g[key]["ms"]:
                best_g[key] = r
        for r in json.loads(subprocess.check_output(
                [sys.executable, str(here / "pytorch_conv_layers.py"), "--json", "--threads", str(args.threads)])):
            key = (r["layer"], r["pass"])
            best_t[key] = min(best_t.get(key, float("inf")), r["ms"])
    g = list(best_g.values())
    torch = best_t
    print(f"| layer | pass | gantry ms | GFLOP/s | % peak | PyTorch ms | PyTorch / gantry | im2col+ndarray ms |")
    print("|---|---|---|---|---|---|---|---|")
    total = {"fwd_bwd": [0.0, 0.0]}
    for r in g:
        tm = torch[(r["layer"], r["pass"])]
        if r["pass"] == "fwd_bwd" and not r["layer"].startswith("SRResNet"):
            total["fwd_bwd"][0] += r["ms"]
            total["fwd_bwd"][1] += tm
        print(f"| {r['layer']} | {r['pass']} | {r['ms']:.2f} | {r['gflops']:.0f} | {100 * r['gflops'] / peak:.0f}% "
              f"| {tm:.2f} | {tm / r['ms']:.2f} | {r['baseline_ms']:.2f} |")
    gs, ts = total["fwd_bwd"]
    print(f"\nDCGAN layers, fwd_bwd summed: gantry {gs:.1f} ms, PyTorch {ts:.1f} ms, ratio {ts / gs:.2f}")


if __name__ == "__main__":
    main()
