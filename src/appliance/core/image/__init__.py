"""Image inference: JPEG / PNG in, labels or boxes out, declared by ``image_*`` parameters in ``config.pbtxt``.

``spec`` reads the declaration, ``decode`` opens images safely, ``preprocess`` turns them into the input tensor,
``postprocess`` turns outputs into labels or boxes, and ``service`` runs a request through the data plane.
"""

from .service import FIELD, ImageInference, ImageResponse, ImageResult

__all__ = ["FIELD", "ImageInference", "ImageResponse", "ImageResult"]
