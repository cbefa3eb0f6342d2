"""StageAssignment: the plain-data contract between stage construction and the runtime."""

from shardsearch.graph import ValueRef
from shardsearch.pipeline.assignment import SPLIT, StageAssignment, StageKind, Transfer

F, B, PRE, POST = StageKind.FORWARD, StageKind.BACKWARD, StageKind.PRE, StageKind.POST


def _assignment():
    return StageAssignment(
        num_stages=3,
        node_stage=(0, 0, 1, 2, SPLIT, 1, 0),
        node_kind=(PRE, F, F, F, POST, B, B),
        unit_ranges=((0, 2), (2, 3), (3, 5)),
        arg_stages=((0, 2), (), (1,)),
        transfers=(
            Transfer(ValueRef(1), 0, 1, F, 100),
            Transfer(ValueRef(1), 0, 2, F, 100),  # skips stage 1: crosses both boundaries
            Transfer(ValueRef(5), 1, 0, B, 7),
            Transfer(ValueRef(0), 0, 2, PRE, 1000),
            Transfer(ValueRef(3), 2, 0, POST, 1000),
        ),
    )


def test_boundary_bytes_count_each_boundary_a_value_crosses():
    a = _assignment()
    assert a.boundary_bytes() == ((200, 7), (100, 0))
    assert a.step_bytes() == 2000


def test_owner_and_nodes_of():
    a = _assignment()
    assert a.owner(0) == 0 and a.owner(1) is None and a.owner(2) == 1
    assert a.nodes_of(0, F) == (1,)
    assert a.nodes_of(1, POST) == (4,)  # a SPLIT node runs on every stage
    assert a.nodes_of(0, B) == (6,)


def test_plan_files_keep_the_assignment_exactly():
    """Saved and loaded (through JSON), a pipeline's assignment is the same object: every
    node's stage and kind, transfers, loop splits and layer dims."""
    import dataclasses
    import json

    from shardsearch.pipeline.assignment import LoopSplit
    from shardsearch.pipeline.plan_data import PipelinePlan, StagePlan, pipeline_from_dict, pipeline_to_dict
    from shardsearch.pipeline.stage_search import Schedule

    a = dataclasses.replace(_assignment(), loop_splits=(LoopSplit(2, ((0, 3), (3, 5), (5, 8))),),
                            layer_dims={4: 0, 6: 1})
    p = PipelinePlan(4, 16, (2,), (StagePlan((0, 1), (1, 2), (0, 2), 1e-3, 2e-4, 1e9),
                                   StagePlan((2, 3), (1, 2), (2, 3)), StagePlan((4, 5, 6, 7), (1, 4), (3, 5))),
                     Schedule.ONE_F_ONE_B, 0.2, ((200, 7), (100, 0)), a, (0, 5, 9))
    again = pipeline_from_dict(json.loads(json.dumps(pipeline_to_dict(p, lambda x: x))), lambda x: x)
    assert again.assignment == a and again == p
