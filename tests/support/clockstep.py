"""A wall-clock step, as the catalog sees it, for tests that run the real clock.

Nobody may set the test machine's clock, so the step is made the other way
round: the clock guard's stored reference is moved back by the step, which is
what the catalog holds after the wall clock jumped forward within this boot.
"""

from __future__ import annotations

import json
from datetime import timedelta

from edge_agent.core.model import iso, utcnow
from edge_agent.host.sysclock import SystemClock
from edge_agent.retention.clockguard import REFERENCE_KEY
from edge_agent.store.catalog import Catalog


def step_forward(cat: Catalog, hours: float = 2.0) -> None:
    clk = SystemClock(kernel_flag=False)
    ref = {
        "wall": iso(utcnow() - timedelta(hours=hours)),
        "boottime_s": clk.boottime(),
        "boot_id": clk.boot_id(),
        "synced": None,
    }
    cat.set_meta(REFERENCE_KEY, json.dumps(ref))
