"""The demo model's autoencoder: 8x down to 4 latent channels, with every convolution at 1/8 resolution.

Pixel-unshuffle in and pixel-shuffle out keep it about five times cheaper than an SD-style VAE of the
same quality on the 64x64 shapes world, which matters when it is trained on a 2-core CPU.
"""

import torch
from torch import nn

FACTOR = 8
IMAGE_CHANNELS = 3


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ShapesAutoencoder(nn.Module):
    """encode: images in [-1, 1] (B, 3, H, W) -> latent means (B, 4, H/8, W/8); decode: the reverse."""

    def __init__(self, latent_channels: int = 4, width: int = 96, blocks: int = 3) -> None:
        super().__init__()
        unshuffled = IMAGE_CHANNELS * FACTOR * FACTOR
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(FACTOR), nn.Conv2d(unshuffled, width, 3, padding=1),
            *[ResidualBlock(width) for _ in range(blocks)],
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, 2 * latent_channels, 3, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, width, 3, padding=1), *[ResidualBlock(width) for _ in range(blocks)],
            nn.GroupNorm(8, width), nn.SiLU(), nn.Conv2d(width, unshuffled, 3, padding=1), nn.PixelShuffle(FACTOR),
        )

    def moments(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_variance = self.encoder(images).chunk(2, dim=1)
        return mean, log_variance.clamp(-30.0, 20.0)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.moments(images)[0]

    def decode(self, latents: torch.Tensor, **_: object) -> torch.Tensor:
        return self.decoder(latents)

    @torch.no_grad()
    def rescale_latents(self, factor: float) -> None:
        """Multiply every latent by `factor` without changing reconstructions (folded into the convolutions)."""
        head = self.encoder[-1]
        head.weight[: head.out_channels // 2] *= factor
        head.bias[: head.out_channels // 2] *= factor
        self.decoder[0].weight /= factor
