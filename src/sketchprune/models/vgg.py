"""VGG-11/13/16/19 for 32x32 inputs (with or without batch norm), as used in PaI papers."""

from __future__ import annotations

from torch import nn

from sketchprune.models.convnets import kaiming_init

CONFIGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    def __init__(self, depth: int, num_classes: int, batch_norm: bool, in_channels: int, width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for v in CONFIGS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            out = max(1, int(v * width))
            layers.append(nn.Conv2d(c, out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        kaiming_init(self)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))

    def _initialize_weights(self) -> None:
        """Kaiming-normal convolutions, unit/zero batch norm (the SynFlow / NTK-SAP code bases' name)."""
        kaiming_init(self)


def factory(depth: int, batch_norm: bool):
    def make(*, num_classes: int = 10, input_shape: tuple[int, ...] = (3, 32, 32), width: float = 1.0) -> nn.Module:
        return VGG(depth, num_classes, batch_norm, input_shape[0], width)

    make.__doc__ = f"VGG-{depth}{' with batch norm' if batch_norm else ''}."
    return make
