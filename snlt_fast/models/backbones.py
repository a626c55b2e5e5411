"""The backbones of SiamRPN++ and SiamRPN, with pysot's parameter names so its weights load unchanged.

ResNet-50 has SiamRPN++'s stride-reduced layer3/layer4 (stride 1, dilation 2 and 4),
so layers 2, 3, 4 all come out at stride 8: 15x15 for a 127 template, 31x31 for a
255 search. AlexNet is pysot's "alexnetlegacy": one `features` Sequential, 256 channels.
Both construct with random weights (He initialisation); load real weights with
snlt_fast.models.load_checkpoint.
"""

import torch
import torch.nn.functional as F
from torch import nn


def _he_init(module):
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


class SeparableMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d, computed on a CPU without autograd as a max over rows, then over columns.

    A maximum is exact in any order, so the result is nn.MaxPool2d's bit for bit, several
    times faster than its window-at-a-time CPU kernel (AlexNet spends ~15% of a frame there).
    """

    def forward(self, x):
        plain = not self.ceil_mode and self.dilation == 1 and not self.return_indices
        if not plain or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        if self.padding:
            x = F.pad(x, (self.padding,) * 4, value=float("-inf"))
        rows = x.unfold(2, self.kernel_size, self.stride).amax(dim=-1)
        return rows.unfold(3, self.kernel_size, self.stride).amax(dim=-1)


class Bottleneck(nn.Module):
    """ResNet bottleneck with SiamRPN++'s padding: none for a stride-2 3x3 conv, the dilation for a dilated one."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        padding = dilation if dilation > 1 else 2 - stride
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, kernel_size=3, stride=stride, padding=padding, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet50Atrous(nn.Module):
    """SiamRPN++'s ResNet-50; forward returns the outputs of layers 2, 3 and 4 (512, 1024, 2048 channels)."""

    out_channels = (512, 1024, 2048)

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = SeparableMaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, 3)
        self.layer2 = self._make_layer(128, 4, stride=2)
        self.layer3 = self._make_layer(256, 6, dilation=2)
        self.layer4 = self._make_layer(512, 3, dilation=4)
        _he_init(self)

    def _make_layer(self, planes, blocks, stride=1, dilation=1):
        out_planes = planes * Bottleneck.expansion
        # A dilated layer starts at half its dilation, in its first block and its shortcut.
        first_dilation = max(dilation // 2, 1)
        if stride == 1 and dilation == 1:
            shortcut = nn.Conv2d(self.inplanes, out_planes, kernel_size=1, stride=stride, bias=False)
        else:
            padding = first_dilation if dilation > 1 else 0
            shortcut = nn.Conv2d(
                self.inplanes, out_planes, kernel_size=3, stride=stride, padding=padding, dilation=first_dilation,
                bias=False,
            )
        downsample = nn.Sequential(shortcut, nn.BatchNorm2d(out_planes))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, first_dilation)]
        self.inplanes = out_planes
        layers += [Bottleneck(out_planes, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @staticmethod
    def feature_size(input_size):
        """Side of the layer 2/3/4 outputs for a square input of side `input_size`."""
        size = (input_size - 7) // 2 + 1  # conv1
        size = (size - 1) // 2 + 1  # maxpool, padding 1
        return (size - 3) // 2 + 1  # layer2's unpadded stride-2 conv

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        p2 = self.layer2(self.layer1(x))
        p3 = self.layer3(p2)
        p4 = self.layer4(p3)
        return [p2, p3, p4]


class AlexNetLegacy(nn.Module):
    """SiamRPN's AlexNet (pysot "alexnetlegacy"): 6x6 features for a 127 template, 26x26 for a 287 search.

    `width` scales every layer's channels (1.0 is pysot's network, whose weights load
    unchanged; a fraction gives a small network for fast training on a CPU).
    """

    def __init__(self, width=1.0):
        super().__init__()
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= 1:
            raise ValueError(f"width must be a number in (0, 1], got {width!r}")
        channels = (3, *(max(1, round(c * width)) for c in (96, 256, 384, 384, 256)))
        self.out_channels = (channels[-1],)
        self.features = nn.Sequential(
            nn.Conv2d(channels[0], channels[1], kernel_size=11, stride=2),
            nn.BatchNorm2d(channels[1]),
            SeparableMaxPool2d(kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[1], channels[2], kernel_size=5),
            nn.BatchNorm2d(channels[2]),
            SeparableMaxPool2d(kernel_size=3, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[2], channels[3], kernel_size=3),
            nn.BatchNorm2d(channels[3]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[3], channels[4], kernel_size=3),
            nn.BatchNorm2d(channels[4]),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels[4], channels[5], kernel_size=3),
            nn.BatchNorm2d(channels[5]),
        )
        _he_init(self)

    @staticmethod
    def feature_size(input_size):
        size = (input_size - 11) // 2 + 1
        size = (size - 3) // 2 + 1
        size = size - 4
        size = (size - 3) // 2 + 1
        return size - 6

    def forward(self, x):
        return [self.features(x)]
