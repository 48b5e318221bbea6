"""PyTorch's DCGAN training step, to compare with `gantry bench dcgan [--device cuda]`.

Same model (pytorch/examples DCGAN, 64x64 RGB, nz=100, ngf=ndf=64, discriminator ending in
logits with BCEWithLogits), same step (D on real + detached fake, G non-saturating, Adam 2e-4
(0.5, 0.999)), random data, 2 warm-up steps, median of the timed steps. Prints one JSON object
with the same keys as `gantry bench dcgan --json`.

    python benches/pytorch_dcgan_step.py --threads 2 --batch-size 64 --iters 10
    python benches/pytorch_dcgan_step.py --device cuda --batch-size 128 --iters 50

On CUDA it runs eager mode with cuDNN (`cudnn.benchmark = True`), f32 (TF32 off, as gantry's
f32 kernels), and synchronises before reading the clock. `--precision bf16` runs the forward
passes and losses under `torch.autocast(dtype=torch.bfloat16)` (f32 master weights), the
baseline of `gantry bench dcgan --device cuda --precision bf16`.

    python benches/pytorch_dcgan_step.py --device cuda --batch-size 128 --precision bf16
"""

import argparse
import json
import time

import torch
import torch.nn as nn

p = argparse.ArgumentParser()
p.add_argument("--threads", type=int, default=2)
p.add_argument("--batch-size", type=int, default=64)
p.add_argument("--image-size", type=int, default=64)
p.add_argument("--iters", type=int, default=10)
p.add_argument("--device", default="cpu")
p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
a = p.parse_args()
torch.set_num_threads(a.threads)
dev = torch.device(a.device)
if dev.type == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
torch.manual_seed(0)
nz, ngf, ndf, nc = 100, 64, 64, 3
blocks = a.image_size.bit_length() - 1 - 3

g_layers = [nn.ConvTranspose2d(nz, ngf << blocks, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf << blocks), nn.ReLU(True)]
ch = ngf << blocks
for _ in range(blocks):
    g_layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
    ch //= 2
g_layers += [nn.ConvTranspose2d(ch, nc, 4, 2, 1, bias=False), nn.Tanh()]
G = nn.Sequential(*g_layers)
d_layers = [nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
ch = ndf
for _ in range(blocks):
    d_layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch * 2), nn.LeakyReLU(0.2, inplace=True)]
    ch *= 2
d_layers += [nn.Conv2d(ch, 1, 4, 1, 0, bias=False)]
D = nn.Sequential(*d_layers)
G, D = G.to(dev), D.to(dev)
opt_g = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
opt_d = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
loss = nn.BCEWithLogitsLoss()
real = (torch.rand(a.batch_size, nc, a.image_size, a.image_size) * 2 - 1).to(dev)
ones, zeros = torch.ones(a.batch_size, device=dev), torch.zeros(a.batch_size, device=dev)


def sync():
    if dev.type == "cuda":
        torch.cuda.synchronize()


def autocast():
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")


def step():
    z = torch.randn(a.batch_size, nz, 1, 1, device=dev)
    with autocast():
        fake = G(z)
    D.zero_grad()
    with autocast():
        ld = loss(D(real).view(-1), ones) + loss(D(fake.detach()).view(-1), zeros)
    ld.backward()
    opt_d.step()
    G.zero_grad()
    with autocast():
        lg = loss(D(fake).view(-1), ones)
    lg.backward()
    opt_g.step()


for _ in range(2):
    step()
sync()
ms = []
for _ in range(a.iters):
    t = time.perf_counter()
    step()
    sync()
    ms.append((time.perf_counter() - t) * 1e3)
ms.sort()
med = ms[len(ms) // 2]
print(json.dumps({"model": "dcgan", "framework": f"torch {torch.__version__}", "batch_size": a.batch_size,
                  "image_size": a.image_size, "threads": a.threads, "device": a.device,
                  "precision": a.precision, "iters": len(ms),
                  "step_ms": med, "step_ms_min": ms[0], "images_per_s": a.batch_size / (med / 1e3)}))
