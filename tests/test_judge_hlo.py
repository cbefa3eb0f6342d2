"""The HLO collective parser on hand-written snippets of each syntax XLA prints."""

from benchmarks.judge import device_groups, parse_collectives

HLO = """
ENTRY %main {
  %ar = f32[512,512]{1,0} all-reduce(f32[512,512]{1,0} %p), channel_id=1, replica_groups={{0,1,2,3},{4,5,6,7}}, to_apply=%add
  %tup = (f32[512]{0}, f32[512,512]{1,0}, f32[]) all-reduce(%a, %b, %c), replica_groups=[2,4]<=[8], to_apply=%add
  %ags = (f32[128,64]{1,0}, f32[256,64]{1,0}) all-gather-start(f32[128,64]{1,0} %x), replica_groups=[4,2]<=[2,4]T(1,0), dimensions={0}
  %agd = f32[256,64]{1,0} all-gather-done(%ags)
  %ars = (f32[10]{0}, f32[15]{0}) all-reduce-start(f32[10]{0} %q, f32[15]{0} %r), replica_groups={{0,1,2,3,4,5,6,7}}, to_apply=%add
  %ard = (f32[10]{0}, f32[15]{0}) all-reduce-done(%ars)
  %rs = f32[64,64]{1,0} reduce-scatter(f32[256,64]{1,0} %y), replica_groups=mesh['axis_0'=2,'axis_1'=4] {'axis_1'}, dimensions={0}
  %a2a = f32[8,64]{1,0} all-to-all(f32[8,64]{1,0} %z), replica_groups=mesh['axis_0'=4,'axis_1'=1,'axis_2'=2], device_ids=([2,4]T(1,0)) {'axis_0'}, dimensions={0}
  ROOT %cp = bf16[16]{0} collective-permute(bf16[16]{0} %w), source_target_pairs={{0,1},{1,2},{2,3},{3,0}}
}
"""


def test_every_kind_and_result_shape():
    found = parse_collectives(HLO)
    assert [c.kind for c in found] == [
        "all-reduce", "all-reduce", "all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute"
    ]
    ar, tup, ag, ars, rs, a2a, cp = found
    assert ars.shapes == (("f32", (10,)), ("f32", (15,)))  # an async all-reduce keeps all its results
    assert ar.shapes == (("f32", (512, 512)),) and ar.nbytes == 512 * 512 * 4
    assert tup.shapes == (("f32", (512,)), ("f32", (512, 512)), ("f32", ())) and not tup.is_scalar
    assert ag.shapes == (("f32", (256, 64)),)  # the async start counts its result, the done is skipped
    assert cp.nbytes == 32 and rs.nbytes == 64 * 64 * 4


def test_replica_group_syntaxes():
    ar, tup, ag, _, rs, a2a, cp = parse_collectives(HLO)
    assert ar.groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert tup.groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert ag.groups(8) == [[0, 4], [1, 5], [2, 6], [3, 7]]
    assert rs.groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # devices [[0,4],[1,5],[2,6],[3,7]] laid on mesh (4,1,2); groups along axis_0
    assert a2a.groups(8) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert cp.groups(8) == [[0, 1], [1, 2], [2, 3], [3, 0]]
    assert device_groups("{}", 4) == [[0, 1, 2, 3]]
    assert device_groups("mesh['x'=2,'y'=4] {'x'}", 8) == [[0, 4], [1, 5], [2, 6], [3, 7]]


def test_sub_axis_groups():
    # 'y':(k)m is the size-m piece of y under a more-major piece of size k (y = 2 x 2 here)
    assert device_groups("mesh['x'=2,'y'=4] {'y':(2)2}", 8) == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert device_groups("mesh['x'=2,'y'=4] {'y':(1)2}", 8) == [[0, 2], [1, 3], [4, 6], [5, 7]]
    assert device_groups("mesh['x'=2,'y'=4] {'x','y':(2)2}", 8) == [[0, 1, 4, 5], [2, 3, 6, 7]]
    groups = device_groups("mesh['a'=2,'b'=4], device_ids=([4,2]T(1,0)) {'b':(2)2}", 8)
    assert sorted(map(sorted, groups)) == [[0, 2], [1, 3], [4, 6], [5, 7]]


def test_node_crossing():
    ar, tup, ag, *_ = parse_collectives(HLO)
    assert not ar.crosses_nodes(8, 4) and ar.crosses_nodes(8, 2)
    assert ag.crosses_nodes(8, 4)
