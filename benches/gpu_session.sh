#!/usr/bin/env bash
# Everything to run on a GPU machine in one call, from binaries built here (x86-64):
#
#   cargo build --release --features cudnn && cargo test --release --no-run
#   mkdir -p gpu-bin && cp target/release/gantry gpu-bin/ && \
#     cp "$(ls -t target/release/deps/cuda_parity-* | grep -v '\.d$' | head -n 1)" gpu-bin/cuda_parity
#   # then, on the GPU machine, with gpu-bin carried along:
#   bash benches/gpu_session.sh gpu-bin
#
# It finds NVRTC in PyTorch's wheels when the toolkit's is not on the library path, then runs
# the parity check, the parity tests, compute-sanitizer (memcheck and racecheck) on the check,
# and the DCGAN step bench next to PyTorch's (eager + cuDNN) in the same call.
set -uo pipefail
bin="${1:-gpu-bin}"
nvrtc="$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)"
lib="$(find "${nvrtc:-/nonexistent}" /usr/local/cuda/lib64 -name 'libnvrtc.so*' 2>/dev/null | head -n 1)"
[ -n "$lib" ] && export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# cuDNN for the in-process baseline of `bench conv` (PyTorch's wheel ships it).
cudnn="$(find "${nvrtc:-/nonexistent}" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu -name 'libcudnn.so*' 2>/dev/null | head -n 1)"
[ -n "$cudnn" ] && export LD_LIBRARY_PATH="$(dirname "$cudnn"):$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
"$bin/gantry" info
echo "== gantry check --device cuda"; "$bin/gantry" check --device cuda
echo "== parity tests"; "$bin/cuda_parity" --nocapture
for tool in memcheck racecheck; do
    echo "== compute-sanitizer --tool $tool"
    compute-sanitizer --tool "$tool" --error-exitcode 9 "$bin/gantry" check --device cuda > /tmp/sanitizer.txt 2>&1
    echo "exit $?"; tail -n 5 /tmp/sanitizer.txt
done
for b in 64 128; do
    echo "== DCGAN step, batch $b"
    "$bin/gantry" bench dcgan --device cuda --batch-size "$b" --iters 20
    echo
    python3 benches/pytorch_dcgan_step.py --device cuda --batch-size "$b" --iters 20
done
echo "== the conv ladder, every rung, batch 128 (DCGAN) and 16 (SRResNet 3x3)"
"$bin/gantry" bench conv --device cuda --batch-size 128 --json > /tmp/ladder.json; echo "exit $?"
"$bin/gantry" bench conv --device cuda --batch-size 128
echo "== PyTorch + cuDNN on the same layers (cudnn.benchmark, fp32/tf32/bf16)"
for p in f32 tf32 bf16; do python3 benches/pytorch_conv_layers.py --device cuda --batch-size 128 --precision "$p"; done
echo "== DCGAN step, batch 128, bf16: CUDA graph, eager, and PyTorch eager + autocast bf16"
"$bin/gantry" bench dcgan --device cuda --batch-size 128 --iters 20 --precision bf16
"$bin/gantry" bench dcgan --device cuda --batch-size 128 --iters 20 --precision bf16 --no-cuda-graph
"$bin/gantry" bench dcgan --device cuda --batch-size 128 --iters 20 --precision bf16 --cuda-conv wg-bf16
python3 benches/pytorch_dcgan_step.py --device cuda --batch-size 128 --iters 20 --precision bf16
echo "== DCGAN step in f16 (eager: loss scaling decides on the host)"
"$bin/gantry" bench dcgan --device cuda --batch-size 128 --iters 20 --precision f16
