"""The ``mlserver`` target's custom runtime: Seldon MLServer running ``model.onnx`` with ONNX Runtime.

Loaded by MLServer itself (``"implementation": "mlserver_runtime.OnnxRuntimeModel"`` in each
model-settings.json), inside MLServer's own virtual environment (``benchmarks/.venv-mlserver``), never by
the project's code. Like the Triton reference's python-backend model, the session has
``allow_spinning = 0``; MLServer's adaptive batching (``max_batch_size``/``max_batch_time``) merges the
requests into one ``predict`` call, which runs them as one batch.
"""

from __future__ import annotations

from typing import Any

import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxRuntimeModel(MLModel):  # type: ignore[misc]  # MLServer is not installed in the project's venv
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = await get_model_uri(self._settings)
        self._session: Any = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        feed = {item.name: NumpyCodec.decode_input(item) for item in payload.inputs}
        results = self._session.run(self._outputs, feed)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(name, value) for name, value in zip(self._outputs, results)],
        )
