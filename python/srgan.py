"""The SRGAN networks (Ledig et al. 2017) as PyTorch modules, with exactly the module tree and
tensor names of gantry's ``gantry_gan::srgan`` (see its documentation for the table), so that a
``state_dict`` saved by either side loads in the other::

    from safetensors.torch import load_file, save_file
    g = SRResNet()                                    # width 64, 16 blocks, x4
    g.load_state_dict(load_file("runs/srresnet/checkpoint/step_010000/generator.safetensors"))
    save_file(g.state_dict(), "generator.safetensors")  # gantry reads this back

Both networks take and return images in [-1, 1] (the discriminator returns logits).
"""

import torch.nn as nn


class Residual(nn.Sequential):
    """``x + body(x)``: gantry's ``Residual``, whose children are the body's layers."""

    def forward(self, x):
        return x + super().forward(x)


class SRResNet(nn.Module):
    def __init__(self, channels=3, width=64, blocks=16, scale=4):
        super().__init__()
        assert scale in (2, 4, 8)
        self.head = nn.Sequential(nn.Conv2d(channels, width, 9, padding=4), nn.PReLU())
        self.body = nn.Sequential(
            *[
                Residual(
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.PReLU(),
                    nn.Conv2d(width, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                )
                for _ in range(blocks)
            ]
        )
        self.trunk = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        up = []
        for _ in range(scale.bit_length() - 1):
            up += [nn.Conv2d(width, 4 * width, 3, padding=1), nn.PixelShuffle(2), nn.PReLU()]
        self.upsample = nn.Sequential(*up)
        self.tail = nn.Conv2d(width, channels, 9, padding=4)

    def forward(self, x):
        h = self.head(x)
        return self.tail(self.upsample(self.trunk(self.body(h)) + h))


class SRDiscriminator(nn.Module):
    def __init__(self, channels=3, width=64, stages=4, dense=1024, image_size=96):
        super().__init__()
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        ch = width
        for layer in range(1, 2 * stages):
            stride, out = (2, ch) if layer % 2 == 1 else (1, 2 * ch)
            layers += [
                nn.Conv2d(ch, out, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2),
            ]
            ch = out
        self.features = nn.Sequential(*layers)
        side = image_size >> stages
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(ch * side * side, dense),
            nn.LeakyReLU(0.2),
            nn.Linear(dense, 1),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
