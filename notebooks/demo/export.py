"""Export the day's summary for other systems: a command task, not a notebook.

nborch runs it as `python3 export.py OUT` (see pipeline.yaml). Upstream results arrive
as JSON in NBORCH_UPSTREAM; values published here reach the run record like a notebook's.
In a real pipeline this step is often another tool's CLI (dbt, a loader, `aws s3 cp`).
"""

import json
import os
import sys
from pathlib import Path

import nborch

out = Path(sys.argv[1])
upstream = json.loads(os.environ.get("NBORCH_UPSTREAM", "{}"))
report = upstream["report"]["values"]
region = upstream["by_region"]["values"]
summary = {
    "day": os.environ.get("NBORCH_LOGICAL_DATE", "")[:10],
    "total_revenue": report["total_revenue"],
    "top_region": region["top_region"],
    "chart": report["report_png"],
}
out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
print(f"exported {out}")
nborch.publish("exported", str(out))
