#!/usr/bin/env bash
# Set everything up, write the demo model repository, and run the appliance on it (Ctrl+C stops it).
# REST on http://127.0.0.1:8000 (docs at /docs), gRPC on 127.0.0.1:8001. Extra arguments go to
# `appliance serve`, e.g. scripts/run-demo.sh --http-port 9000.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/appliance demo-repository demo-models
exec .venv/bin/appliance serve --model-repository demo-models --http-address 127.0.0.1 --grpc-address 127.0.0.1 "$@"
