"""What `run_service` does to its process before it serves: the file table grown ahead
(services.common.server.grow_file_table), in a fresh interpreter so that the table starts small."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, os, re, resource
def slots():
    return int(re.search(r"FDSize:\s+(\d+)", open("/proc/self/status").read()).group(1))
before = slots()
kept = os.open(os.devnull, os.O_RDONLY)
from services.common.server import grow_file_table
high = grow_file_table(8192)
os.fstat(kept)  # a descriptor in use is left alone
print(json.dumps({"before": before, "after": slots(), "high": high,
                  "limit": resource.getrlimit(resource.RLIMIT_NOFILE), "next": os.open(os.devnull, os.O_RDONLY)}))
"""


def test_the_file_table_is_grown_ahead_and_the_soft_limit_raised_to_the_hard():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    seen = json.loads(out)
    soft, hard = seen["limit"]
    assert soft == hard
    if hard < 8192:  # a machine whose hard limit is lower grows the table to it
        assert seen["high"] in (-1, hard - 1)
        return
    assert seen["before"] < 8192 <= seen["after"]
    assert seen["high"] == 8191
    assert seen["next"] < 64  # the high descriptor was given back: new ones are still the lowest free
