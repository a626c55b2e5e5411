"""pysot's neck (AdjustAllLayer): 1x1 conv + BN per level to 256 channels, templates centre-cropped to 7x7."""

from torch import nn

# pysot crops every map narrower than this: the 15x15 template maps, never the search maps.
CROP_BELOW = 20


class AdjustLayer(nn.Module):
    def __init__(self, in_channels, out_channels, center_size=7):
        super().__init__()
        self.downsample = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.center_size = center_size

    def output_size(self, size):
        return self.center_size if size < CROP_BELOW else size

    def forward(self, x):
        x = self.downsample(x)
        if x.shape[3] < CROP_BELOW:
            left = (x.shape[3] - self.center_size) // 2
            right = left + self.center_size
            x = x[:, :, left:right, left:right]
        return x


class AdjustAllLayer(nn.Module):
    """One AdjustLayer per level, named downsample2, downsample3, ... as in pysot."""

    def __init__(self, in_channels=(512, 1024, 2048), out_channels=(256, 256, 256), center_size=7):
        super().__init__()
        self.level_names = [f"downsample{index + 2}" for index in range(len(in_channels))]
        for name, n_in, n_out in zip(self.level_names, in_channels, out_channels):
            self.add_module(name, AdjustLayer(n_in, n_out, center_size))

    def output_size(self, size):
        return getattr(self, self.level_names[0]).output_size(size)

    def forward(self, features):
        return [getattr(self, name)(feature) for name, feature in zip(self.level_names, features)]
