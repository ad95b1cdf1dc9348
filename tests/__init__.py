"""cotforge's tests.

Offline before anything else is imported: huggingface_hub reads ``HF_HUB_OFFLINE`` once, at its
first import, which can happen at collection or in a session fixture, before the per-test
``_offline`` fixture of conftest.py runs.
"""

import os

os.environ.update(
    {
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
)
