"""The user's pins inside a pipeline's stage programs.

``program_pins(pins, graph, program, stage_mesh)``: a stage program reads an argument
of the traced step whole (a parameter, its optimizer state) or one microbatch of it (a
batch input); each pin naming that argument (``shardsearch.pins``, resolved on the
stage's submesh) fixes the layout the program reads it in, as the whole-mesh search
would. A microbatch keeps the pinned layout where the axes still divide its rows, and
leaves that dim whole where they do not. The result names the program's inputs by its
own paths, ready for ``SearchConfig.pins``.
"""

from __future__ import annotations

from jax.sharding import PartitionSpec

from cost_model import MeshShape
from shardsearch.graph import OpGraph
from shardsearch.pins import Pins, resolve_pins
from shardsearch.pipeline.programs import Form, Program


def program_pins(pins: Pins, graph: OpGraph, program: Program, stage_mesh: MeshShape) -> Pins:
    if not pins:
        return ()
    pinned = resolve_pins(pins, graph, stage_mesh)
    arg_of = {n: i for i, n in enumerate(graph.input_nodes)}
    out = []
    for k, key in enumerate(program.inputs):
        i = arg_of.get(key.ref.node) if key.form in (Form.WHOLE, Form.SLICE) else None
        if i is None or i not in pinned:
            continue
        shape = program.graph.input_info(k).shape
        dims = [axes if size % stage_mesh.group_size(axes) == 0 else () for size, axes in zip(shape, pinned[i])]
        out.append((program.graph.in_paths[k], PartitionSpec(*[tuple(a) if a else None for a in dims])))
    return tuple(out)
