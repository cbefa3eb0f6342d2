"""python -m benchmarks --suite gpt --cluster h100-8 --mesh 2x4 [--mesh 4x2] [--config gpt-tiny ...]"""

from benchmarks.cli import main

main()
