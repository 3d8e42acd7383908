"""Decoding a JPEG or PNG safely: the header is checked before any pixel is decoded.

``Image.open`` is lazy: it reads the header only, so the dimensions are known before a single pixel buffer is
allocated. A file that claims more than the pixel limit (a decompression bomb: a few hundred bytes announcing
100000 x 100000) is refused there. PIL's global ``Image.MAX_IMAGE_PIXELS`` is left alone: the limit is ours.
JPEGs are decoded with ``draft``: libjpeg scales by 1/2, 1/4 or 1/8 while decoding (DCT scaling), to the
smallest size at least as large as the one asked for, which is several times faster for camera frames going into a
small model.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..errors import InvalidArgument

#: The formats accepted, by Pillow's name.
FORMATS = ("JPEG", "PNG")


def open_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """The image's header read and checked: a JPEG or PNG, not empty, at most ``max_pixels`` pixels. Nothing is
    decoded yet. InvalidArgument naming ``field`` otherwise."""
    if not data:
        raise InvalidArgument(f"'{field}' is empty")
    try:
        with warnings.catch_warnings():
            # Pillow warns (or refuses, past twice its own limit) on huge images; our limit below is the one
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:  # Pillow's own refusal, past twice its MAX_IMAGE_PIXELS
        limit = min(max_pixels, 2 * (Image.MAX_IMAGE_PIXELS or max_pixels))
        raise InvalidArgument(f"'{field}' declares more than the limit of {limit} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise InvalidArgument(f"'{field}' is not a JPEG or PNG image") from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidArgument(f"'{field}' has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InvalidArgument(
            f"'{field}' is {width}x{height} ({width * height} pixels), over the limit of {max_pixels} pixels"
        )
    return image


def decode(image: Image.Image, field: str, at_least: tuple[int, int]) -> Image.Image:
    """The pixels as RGB, decoded (a JPEG at the smallest DCT scale not under ``at_least``, width x height)."""
    try:
        if image.format == "JPEG":
            image.draft("RGB", at_least)
        image.load()
        return image if image.mode == "RGB" else image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidArgument(f"'{field}' is truncated or corrupt: {str(exc)[:120]}") from None
    except Image.DecompressionBombError:  # a PNG whose chunks grow past what its header said
        raise InvalidArgument(f"'{field}' decodes to more pixels than its header declares") from None
