#!/usr/bin/env bash
# Everything to run on a GPU machine in one call, from binaries built here (x86-64):
#
#   cargo build --release && cargo test --release --no-run
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
