"""A handler for the official worker daemon: writes the payload's ``outcome`` object, as is, to
the file the daemon names in ``$CUEAPI_OUTCOME_FILE``, then says so on stdout and exits 0."""

from __future__ import annotations

import json
import os

payload = json.loads(os.environ["CUEAPI_PAYLOAD"])
with open(os.environ["CUEAPI_OUTCOME_FILE"], "w", encoding="utf-8") as f:
    json.dump(payload["outcome"], f)
print(f"wrote the outcome of {os.environ['CUEAPI_EXECUTION_ID']}")
