"""Every test runs on 8 fake CPU devices (set before jax is imported anywhere)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_flag = "--xla_force_host_platform_device_count=8"
if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _flag).strip()

# The plan cache stays off in tests: no writes to the user's home, and every test sees a
# real search (tests/test_cache.py turns it on with a tmp_path folder).
os.environ["SHARDSEARCH_NO_CACHE"] = "1"
