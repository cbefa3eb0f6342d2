"""Pipeline parallelism: microbatching, stage cuts, the stage search (numpy only) and the
MPMD stage runtime. See each module's docstring for its API."""
