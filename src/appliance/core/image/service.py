"""Image inference: encoded images in, labels or boxes out, through the same data plane as tensor requests.

:class:`ImageInference` finds the model's :class:`~.spec.ImageSpec` (for a route, the stable arm's), decodes and
preprocesses the images in worker threads, sends them as one core :class:`~appliance.core.types.InferRequest` per
batch (the batcher, the response cache, routes and statistics see an ordinary request) and postprocesses the
outputs.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..errors import InvalidArgument
from ..repository import Parked
from ..types import InferRequest, InputTensor, RequestedOutput
from .postprocess import Detection, Label, classify, detect
from .preprocess import Geometry, prepare
from .spec import ImageSpec, Task, image_spec

if TYPE_CHECKING:
    from ..dataplane import DataPlane
    from ..model import ModelVersion

#: The form field (REST) that carries an image; with several, the n-th is named ``image[n]`` in errors.
FIELD = "image"

#: Most images in one request.
MAX_IMAGES = 64


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One image's answer: its original size, and its labels (classification) or detections (detection)."""

    width: int
    height: int
    labels: list[Label] | None = None
    detections: list[Detection] | None = None


@dataclass(frozen=True, slots=True)
class ImageResponse:
    model_name: str
    model_version: str
    results: list[ImageResult]


def field_name(index: int, count: int) -> str:
    return FIELD if count == 1 else f"{FIELD}[{index}]"


class ImageInference:
    """Image requests over one data plane; specs are read once per loaded model version."""

    def __init__(self, dataplane: DataPlane) -> None:
        self._dp = dataplane
        self._specs: weakref.WeakKeyDictionary[ModelVersion, ImageSpec] = weakref.WeakKeyDictionary()

    def spec(self, name: str, version: str = "") -> ImageSpec:
        """The image declaration of a model (that version), or of a route's stable arm."""
        dp = self._dp
        served = dp.routes.stable_model(name) if name in dp.routes else dp.repository.get(name, version)
        spec = self._specs.get(served)
        if spec is None:
            spec = image_spec(name, served.config, served.inputs, served.outputs, served.labels)
            self._specs[served] = spec
        return spec

    async def infer(
        self, name: str, version: str, images: Sequence[bytes], headers: Mapping[str, str], transport: str
    ) -> ImageResponse:
        if not images:
            raise InvalidArgument(f"no '{FIELD}' in the request")
        if len(images) > MAX_IMAGES:
            raise InvalidArgument(f"{len(images)} '{FIELD}' fields: at most {MAX_IMAGES} images a request")
        try:
            spec = self.spec(name, version)
        except Parked:  # loaded again for this request (bounded), as for any inference
            await self._dp.repository.wake(name, version, self._dp.settings.park_wake_timeout_s)
            spec = self.spec(name, version)
        limit = self._dp.settings.image_max_pixels
        count = len(images)
        prepared = await asyncio.gather(
            *(asyncio.to_thread(prepare, spec, data, field_name(i, count), limit) for i, data in enumerate(images))
        )
        step = spec.max_batch_size if spec.batched else 1
        chunks = [prepared[i : i + step] for i in range(0, count, step)]
        answers = await asyncio.gather(*(self._infer_chunk(spec, name, version, c, headers, transport) for c in chunks))
        results = [result for _, _, chunk_results in answers for result in chunk_results]
        return ImageResponse(answers[0][0], answers[0][1], results)

    async def _infer_chunk(
        self,
        spec: ImageSpec,
        name: str,
        version: str,
        chunk: Sequence[tuple[NDArray[Any], Geometry]],
        headers: Mapping[str, str],
        transport: str,
    ) -> tuple[str, str, list[ImageResult]]:
        tensors = [t for t, _ in chunk]
        data = np.stack(tensors) if spec.batched or spec.leading_one else tensors[0]
        request = InferRequest(
            model_name=name,
            model_version=version,
            inputs=[InputTensor(spec.input_name, spec.datatype, data.shape, data)],
            outputs=[RequestedOutput(spec.output_name)],
            headers=headers,
            transport=transport,
        )
        response = await self._dp.infer(request)
        output = next((o.data for o in response.outputs if o.name == spec.output_name), None)
        if output is None:
            raise InvalidArgument(f"model '{name}' returned no output '{spec.output_name}'")
        per_image = output if spec.batched or spec.leading_one else output[None]
        geometries = [g for _, g in chunk]
        if spec.task is Task.CLASSIFICATION:
            results = [
                ImageResult(g.width, g.height, labels=classify(spec, per_image[i])) for i, g in enumerate(geometries)
            ]
        else:

            def boxes() -> list[ImageResult]:
                return [
                    ImageResult(g.width, g.height, detections=detect(spec, per_image[i], g))
                    for i, g in enumerate(geometries)
                ]

            results = await asyncio.to_thread(boxes)
        return response.model_name, response.model_version, results
