"""How large an input image may be, and how it may be fetched."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..outbound import OutboundLimits


@dataclass(frozen=True, slots=True)
class MediaLimits:
    """Limits for loading one input image.

    ``max_pixels`` is checked by predictd; Pillow's own decompression-bomb guard
    (``PIL.Image.MAX_IMAGE_PIXELS``, about 89 M pixels) is treated as an error too, so a ``max_pixels``
    above it is effectively capped there. ``fetch`` is the network policy and time limits of a URL.
    """

    max_bytes: int = 20 * 1024 * 1024  # per image, downloaded or decoded
    max_pixels: int = 40_000_000  # decompression-bomb guard (width*height)
    fetch: OutboundLimits = field(default_factory=OutboundLimits)

    def __post_init__(self) -> None:
        if self.max_bytes <= 0 or self.max_pixels <= 0:
            raise ValueError("max_bytes and max_pixels must be positive")
