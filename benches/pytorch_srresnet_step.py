"""PyTorch's SRResNet training step, to compare with `gantry bench srresnet`.

Same model (`python/srgan.py`'s SRResNet: width 64, 16 blocks, x4), same step (forward, pixel
MSE, backward, Adam 1e-4), random data of the same shapes, 2 warm-up steps, median of the timed
steps. Prints one JSON object with the keys of `gantry bench srresnet --json`.

    python benches/pytorch_srresnet_step.py --threads 2 --batch-size 16 --iters 5
    python benches/pytorch_srresnet_step.py --device cuda --batch-size 16 --iters 50
"""

import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
from srgan import SRResNet  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--crop", type=int, default=96)
p.add_argument("--iters", type=int, default=5)
p.add_argument("--device", default="cpu")
a = p.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)
if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
g = SRResNet().to(dev)
opt = torch.optim.Adam(g.parameters(), lr=1e-4)
lr = (torch.rand(a.batch_size, 3, a.crop // 4, a.crop // 4) * 2 - 1).to(dev)
hr = (torch.rand(a.batch_size, 3, a.crop, a.crop) * 2 - 1).to(dev)


def step():
    opt.zero_grad(set_to_none=True)
    loss = F.mse_loss(g(lr), hr)
    loss.backward()
    opt.step()
    return loss.item()


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


for _ in range(2):
    step()
sync()
ms = []
for _ in range(max(a.iters, 1)):
    t = time.perf_counter()
    step()
    sync()
    ms.append((time.perf_counter() - t) * 1e3)
ms.sort()
median = ms[len(ms) // 2]
print(
    json.dumps(
        {
            "model": "srresnet",
            "framework": f"pytorch {torch.__version__}",
            "batch_size": a.batch_size,
            "crop": a.crop,
            "width": 64,
            "blocks": 16,
            "scale": 4,
            "threads": a.threads,
            "device": a.device,
            "iters": len(ms),
            "step_ms": median,
            "step_ms_min": ms[0],
            "images_per_s": a.batch_size / (median / 1e3),
        }
    )
)
