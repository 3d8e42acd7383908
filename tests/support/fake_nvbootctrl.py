#!/usr/bin/env python3
"""FAKE nvbootctrl: the boot-slot tool of a Jetson, for hosts that have no boot slots. It keeps the slots in the
JSON file named by $FAKE_NVBOOTCTRL_STATE ({"current": 0, "active": 0, "good": [..], "calls": [..]}) and answers
the three commands the appliance uses: get-current-slot, set-active-boot-slot N, verify."""

import json
import os
import sys
from pathlib import Path
from typing import Any

state_file = Path(os.environ["FAKE_NVBOOTCTRL_STATE"])
state: dict[str, Any] = (
    json.loads(state_file.read_text()) if state_file.exists() else {"current": 0, "active": 0, "good": []}
)
args = sys.argv[1:]
state.setdefault("calls", []).append(" ".join(args))
if args == ["get-current-slot"]:
    print(state["current"])
elif len(args) == 2 and args[0] == "set-active-boot-slot" and args[1] in ("0", "1"):
    state["active"] = int(args[1])
elif args == ["verify"]:
    state["good"] = sorted(set(state.get("good", [])) | {state["current"]})
else:
    print(f"nvbootctrl: unknown command {' '.join(args)}", file=sys.stderr)
    sys.exit(1)
state_file.write_text(json.dumps(state))
