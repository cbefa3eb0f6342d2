"""What XLA's compiler logs while it compiles: its C++ warnings go to the process's
stderr (file descriptor 2), not through Python, so they are read from a temporary file
put in its place for the duration.

    with xla_log() as log:
        compiled = jitted.lower(*args).compile()
    involuntary_rematerializations(log.text)  # the SPMD partitioner's reshards it could not do
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import tempfile

# spmd_partitioner.cc: "[SPMD] Involuntary full rematerialization. The compiler cannot go
# from sharding {...} to {...} efficiently for HLO operation %x = f32[...] ..."
_REMAT = re.compile(r"Involuntary full rematerialization[^\n]*")


@dataclasses.dataclass
class Captured:
    text: str = ""


@contextlib.contextmanager
def xla_log(echo: bool = False):
    """Capture what is written to file descriptor 2 inside the block into ``.text``;
    ``echo``: write it to the real stderr afterwards as well."""
    captured = Captured()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.text = tmp.read().decode(errors="replace")
    if echo and captured.text:
        sys.stderr.write(captured.text)


def involuntary_rematerializations(text: str) -> list[str]:
    """Each "Involuntary full rematerialization" message of the SPMD partitioner."""
    return _REMAT.findall(text)
