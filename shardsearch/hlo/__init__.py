"""Reading XLA's optimized HLO text: the collectives (``collectives``), the module's
computations and instructions (``module``) and the matmuls' FLOPs (``compute``).
``plan.fidelity`` and the benchmarks' judge read compiled programs through it."""

from .collectives import HloCollective as HloCollective
from .collectives import device_groups as device_groups
from .collectives import parse_collectives as parse_collectives
from .compute import HloCompute as HloCompute
from .compute import HloMatmul as HloMatmul
from .compute import hlo_compute as hlo_compute
from .compute import parse_matmuls as parse_matmuls
from .module import Computation as Computation
from .module import Instruction as Instruction
from .module import parse_module as parse_module
