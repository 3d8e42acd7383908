"""``appliance serve`` with the gRPC ModelInfer path cut after one stage, for measurement only.

Started by ``benchmarks/limits.py`` (its "stages" check) to see what each stage of a request costs on the wire,
where it can differ from what the same code costs in process (``hotpath.py``):

    python benchmarks/stages.py STAGE serve --model-repository DIR [appliance serve options]

STAGE is one of
- ``canned``: ModelInfer answers a canned response at once (the grpc-floor's, inside the appliance's process);
- ``decode``: it decodes the request first, then answers the canned response;
- ``dataplane``: the whole data plane runs (checks, batcher, ONNX Runtime, statistics), then the canned response
  is answered instead of encoding the real one;
- ``no-onnxruntime``: the whole path, with each ONNX Runtime run replaced by the first answer of its instance for
  the same input shapes;
- ``full``: nothing is cut.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/stages.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("canned", "decode", "dataplane", "no-onnxruntime", "full")


def cut(stage: str, repo: Path) -> None:
    """Patch the appliance's classes so that a request stops after ``stage``."""
    from appliance.backends.onnxruntime import OnnxRuntimeBackend
    from appliance.grpc import service
    from benchmarks.grpc_floor import canned_responses

    _, canned = canned_responses(repo)
    if stage in ("canned", "decode", "dataplane"):

        async def model_infer(self: Any, request: Any, context: Any) -> Any:
            if stage != "canned":
                decoded = service._decode(request, context)
                if stage == "dataplane":
                    await self._dp.infer(decoded)
            return canned[request.model_name]

        service.InferenceService.ModelInfer = model_infer  # type: ignore[method-assign]
    elif stage == "no-onnxruntime":
        execute = OnnxRuntimeBackend.execute
        answers: dict[tuple[int, tuple[tuple[str, tuple[int, ...]], ...]], Any] = {}

        def first_answer(self: Any, instance: int, inputs: Any, outputs: Any) -> Any:
            key = (instance, tuple((name, array.shape) for name, array in inputs.items()))
            if key not in answers:
                answers[key] = execute(self, instance, inputs, outputs)
            return answers[key]

        OnnxRuntimeBackend.execute = first_answer  # type: ignore[method-assign]
    elif stage != "full":
        raise SystemExit(f"stage {stage!r}: expected one of {', '.join(STAGES)}")


def main() -> int:
    if len(sys.argv) < 3 or "--model-repository" not in sys.argv:
        raise SystemExit(__doc__)
    stage = sys.argv.pop(1)
    cut(stage, Path(sys.argv[sys.argv.index("--model-repository") + 1]))
    sys.argv[0] = "appliance"
    from appliance.cli import main as appliance_main

    return appliance_main()


if __name__ == "__main__":
    sys.exit(main())
