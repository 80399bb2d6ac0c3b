"""Quality gates between the lake's layers (docs/quality.md).

Each stage hands its staged batch to `quality.gates.auditor(...)` before publishing it
(write-audit-publish, pipelines/lake.py): Great Expectations suites written as code in
`quality.suites` validate it, the results and Data Docs are kept under the lake, and a failed
gate publishes nothing. A downstream stage calls `quality.gates.require_upstream_passed` first.
`python -m quality.report` prints the latest outcome of each layer.
"""

import os

# Set before great_expectations is imported anywhere in the process: GX's documented switch for
# its usage analytics. The gates send nothing outside the lake.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
