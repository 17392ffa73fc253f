"""The original project's two from-scratch CNNs."""

from __future__ import annotations

from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def scratch_body() -> tuple[nn.Module, int]:
    """5 blocks of Conv-BN-ReLU + MaxPool, widths 64, 128, 256x2, 512x2, 512x2."""
    layers: list[nn.Module] = []
    cin = 3
    for widths in ((64,), (128,), (256, 256), (512, 512), (512, 512)):
        for cout in widths:
            layers += _conv_bn_relu(cin, cout)
            cin = cout
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers), 512


class ResidualBlock(nn.Module):
    """(Conv-BN-ReLU) x2 plus a 1x1 skip convolution, then ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.main = nn.Sequential(*_conv_bn_relu(cin, cout),
                                  nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.main(x) + self.skip(x))


def residual_body() -> tuple[nn.Module, int]:
    """Residual stages 3->64, 64->128, 128->256 x2, 256->512 x2, 512->512 x2 (+MaxPool), then 512->512 x2."""
    layers: list[nn.Module] = []
    for stage in (((3, 64),), ((64, 128),), ((128, 256), (256, 256)), ((256, 512), (512, 512)),
                  ((512, 512), (512, 512))):
        layers += [ResidualBlock(cin, cout) for cin, cout in stage]
        layers.append(nn.MaxPool2d(2))
    layers += [ResidualBlock(512, 512), ResidualBlock(512, 512)]
    return nn.Sequential(*layers), 512
