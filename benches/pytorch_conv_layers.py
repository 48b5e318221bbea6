"""PyTorch baseline for `gantry bench conv`: the same layers, timed the same way.

    python benches/pytorch_conv_layers.py --threads 2 [--batch-size 64] [--json]
    python benches/pytorch_conv_layers.py --device cuda --batch-size 128 --precision bf16

On CUDA, cuDNN picks its fastest algorithm per layer (`cudnn.benchmark`), each timed call ends
with a device synchronise, and `--precision` runs the layers in f32, tf32 (f32 tensors with
TF32 allowed), bf16 or f16 tensors: the baseline for the matching rung of `gantry bench conv
--device cuda`.

Each layer runs in f32 without bias. `fwd` is the layer's forward pass, and `fwd_bwd` is forward
plus backward for both the input and the weight gradient, which is what gantry's `fwd_bwd` times.
Each figure is the median of at least 3 runs and at least 0.3 s of runs, after one warm-up run.
PyTorch is needed only for this comparison; gantry never uses it.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

# (name, transposed, batch, c_in, hw_in, c_out, k, stride, pad), as in src/bench.rs, but
# given from the layer's own point of view (a transposed layer's input is hw_in).
LAYERS = [
    ("G1 convT 100->512 1->4", True, None, 100, 1, 512, 4, 1, 0),
    ("G2 convT 512->256 4->8", True, None, 512, 4, 256, 4, 2, 1),
    ("G3 convT 256->128 8->16", True, None, 256, 8, 128, 4, 2, 1),
    ("G4 convT 128->64 16->32", True, None, 128, 16, 64, 4, 2, 1),
    ("G5 convT 64->3 32->64", True, None, 64, 32, 3, 4, 2, 1),
    ("D1 conv 3->64 64->32", False, None, 3, 64, 64, 4, 2, 1),
    ("D2 conv 64->128 32->16", False, None, 64, 32, 128, 4, 2, 1),
    ("D3 conv 128->256 16->8", False, None, 128, 16, 256, 4, 2, 1),
    ("D4 conv 256->512 8->4", False, None, 256, 8, 512, 4, 2, 1),
    ("D5 conv 512->1 4->1", False, None, 512, 4, 1, 4, 1, 0),
    ("SRResNet conv3x3 64->64 96", False, 16, 64, 96, 64, 3, 1, 1),
]


SYNC = lambda: None


def median_ms(fn, min_reps=3):
    fn()
    SYNC()
    times, start = [], time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < 0.3:
        t = time.perf_counter()
        fn()
        SYNC()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32", choices=["f32", "tf32", "bf16", "f16"])
    args = ap.parse_args()
    global SYNC
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(args.precision, torch.float32)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        allow = args.precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allow
        torch.backends.cudnn.allow_tf32 = allow
        SYNC = torch.cuda.synchronize
    rows = []
    for name, transposed, batch, c_in, hw, c_out, k, s, p in LAYERS:
        n = batch or args.batch_size
        x = torch.randn(n, c_in, hw, hw, device=dev, dtype=dtype, requires_grad=True)
        if transposed:
            w = torch.randn(c_in, c_out, k, k, device=dev, dtype=dtype) * 0.02
            run = lambda: F.conv_transpose2d(x, w, stride=s, padding=p)
        else:
            w = torch.randn(c_out, c_in, k, k, device=dev, dtype=dtype) * 0.02
            run = lambda: F.conv2d(x, w, stride=s, padding=p)
        w = w.detach().requires_grad_(True)
        out = run()
        g = torch.randn_like(out)

        def fwd():
            with torch.no_grad():
                run()

        def fwd_bwd():
            x.grad = None
            w.grad = None
            run().backward(g)

        k_taps = (c_out if transposed else c_in) * k * k
        flops = 2.0 * out.numel() * k_taps if not transposed else 2.0 * x.numel() * c_out * k * k
        for pass_, ms, mult in [("fwd", median_ms(fwd), 1), ("fwd_bwd", median_ms(fwd_bwd), 3)]:
            rows.append({"layer": name, "pass": pass_, "threads": args.threads, "ms": round(ms, 4),
                         "gflops": round(flops * mult / (ms * 1e6), 2), "torch": torch.__version__,
                         "device": args.device, "precision": args.precision})
    if args.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(f"{r['layer']:<28} {r['pass']:<7} {r['ms']:>9.3f} ms {r['gflops']:>8.1f} GFLOP/s")


if __name__ == "__main__":
    main()
