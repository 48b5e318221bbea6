"""The CycleGAN networks (Zhu et al. 2017) as PyTorch modules, with the module tree and tensor
names of gantry's ``gantry_gan::cyclegan`` — which are those of the authors'
``pytorch-CycleGAN-and-pix2pix`` ``ResnetGenerator`` and ``NLayerDiscriminator`` with instance
norm and no dropout. A ``state_dict`` saved by either side loads in the other::

    from safetensors.torch import load_file, save_file
    g = ResnetGenerator(ngf=32, blocks=6)
    g.load_state_dict(load_file("runs/cyclegan-faces/checkpoint/step_006000/generator_ab.safetensors"))
    save_file(g.state_dict(), "generator_ab.safetensors")   # gantry reads this back

Images are in [-1, 1]; the discriminator returns a grid of least-squares logits.
"""

import torch.nn as nn


class ResnetBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3), nn.InstanceNorm2d(dim),
        )

    def forward(self, x):
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    def __init__(self, channels_in=3, channels_out=3, ngf=64, blocks=9):
        super().__init__()
        w = ngf
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(channels_in, w, 7), nn.InstanceNorm2d(w),
                  nn.ReLU(True)]
        for k in (1, 2):
            layers += [nn.Conv2d(w * k, w * k * 2, 3, stride=2, padding=1),
                       nn.InstanceNorm2d(w * k * 2), nn.ReLU(True)]
        layers += [ResnetBlock(4 * w) for _ in range(blocks)]
        for k in (4, 2):
            layers += [nn.ConvTranspose2d(w * k, w * k // 2, 3, stride=2, padding=1,
                                          output_padding=1),
                       nn.InstanceNorm2d(w * k // 2), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(w, channels_out, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        return self.model(x)


class PatchDiscriminator(nn.Module):
    """The 70x70 PatchGAN for ``layers=3``."""

    def __init__(self, channels=3, ndf=64, layers=3):
        super().__init__()
        seq = [nn.Conv2d(channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        width = ndf
        for n in range(1, layers + 1):
            nxt = ndf * min(2 ** n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(width, nxt, 4, stride=stride, padding=1), nn.InstanceNorm2d(nxt),
                    nn.LeakyReLU(0.2, True)]
            width = nxt
        seq += [nn.Conv2d(width, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*seq)

    def forward(self, x):
        return self.model(x)
