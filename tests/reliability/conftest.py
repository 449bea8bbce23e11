"""The full reliability run is long: collected only with ``RELIABILITY=1``.

``make test-reliability`` sets it.
"""

from __future__ import annotations

import os

collect_ignore_glob = [] if os.environ.get("RELIABILITY") == "1" else ["*"]
