"""ResNets: CIFAR ResNet-20/32/44/56/110 (3 stages, 6n+2 layers), WideResNet, ResNet-18 for 64x64."""

from __future__ import annotations

from torch import nn

from sketchprune.models.convnets import kaiming_init


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int, stem: str) -> None:
        super().__init__()
        c = widths[0] if stem == "cifar" else 64
        if stem == "cifar":
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        else:  # 64x64 inputs (Tiny ImageNet): 3x3 stem, no max-pool
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        stages = []
        for i, (n, w) in enumerate(zip(blocks, widths)):
            layers = []
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if (j == 0 and i > 0) else 1))
                c = w
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        kaiming_init(self)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))

    def _initialize_weights(self) -> None:
        """Kaiming-normal convolutions, unit/zero batch norm (the SynFlow / NTK-SAP code bases' name)."""
        kaiming_init(self)


def cifar_factory(depth: int):
    assert (depth - 2) % 6 == 0

    def make(*, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), width: int = 16) -> nn.Module:
        n = (depth - 2) // 6
        return ResNet([n] * 3, [width, 2 * width, 4 * width], num_classes, input_shape[0], "cifar")

    make.__doc__ = f"CIFAR ResNet-{depth}: 3 stages of {(depth - 2) // 6} basic blocks."
    return make


def wide_resnet(*, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), depth: int = 16,
                width: int = 4) -> nn.Module:
    """WideResNet-depth-width (basic blocks, 3 stages of 16k/32k/64k channels)."""
    if (depth - 4) % 6:
        raise TypeError("WideResNet depth must be 6n + 4 (e.g. 16, 22, 28)")
    n = (depth - 4) // 6
    return ResNet([n] * 3, [16 * width, 32 * width, 64 * width], num_classes, input_shape[0], "cifar")


def resnet18(*, num_classes: int = 200, input_shape: tuple[int, ...] = (3, 64, 64), width: int = 64) -> nn.Module:
    """ResNet-18 (4 stages of 2 basic blocks) for 64x64 inputs such as Tiny ImageNet."""
    return ResNet([2, 2, 2, 2], [width, 2 * width, 4 * width, 8 * width], num_classes, input_shape[0], "tiny")
