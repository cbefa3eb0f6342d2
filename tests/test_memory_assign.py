"""memory.assign (XLA's placement of temporaries into argument and result buffers) against
a plain reference: each temporary, largest first, tried in every home smallest first."""

import bisect
import pickle
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from shardsearch.memory import Home, Span, assign


def reference_assign(temps, homes):
    """home_of per temporary: the first home (by size, then later index) whose occupied
    spans leave its whole lifetime free (a temporary read last where the result is
    written in place, of the result's size, may touch that write)."""
    spans = [sorted(h.busy) for h in homes]
    order = sorted(range(len(homes)), key=lambda i: (homes[i].nbytes, -i))
    home_of = [-1] * len(temps)

    def fits(h, s):
        for k, (a, b) in enumerate(spans[h]):
            if a <= s.last and b >= s.first:  # overlap
                touching = a == s.last == homes[h].shares and s.nbytes == homes[h].nbytes
                earlier = [span for j, span in enumerate(spans[h]) if j != k and span[0] <= s.last]
                if not touching or any(e >= s.first for _, e in earlier):
                    return False
        return True

    for t in sorted(range(len(temps)), key=lambda t: (-temps[t].nbytes, temps[t].first, t)):
        s = temps[t]
        if s.nbytes <= 0:
            continue
        for h in order:
            if homes[h].nbytes >= s.nbytes and fits(h, s):
                bisect.insort(spans[h], (s.first, s.last))
                home_of[t] = h
                break
    return tuple(home_of)


SIZES = st.sampled_from([1.0, 2.0, 4.0])


@st.composite
def placements(draw):
    n = 24
    temps = []
    for _ in range(draw(st.integers(0, 14))):
        first = draw(st.integers(0, n - 1))
        temps.append(Span(first, draw(st.integers(first, min(n - 1, first + 8))), draw(SIZES)))
    homes = []
    for _ in range(draw(st.integers(0, 5))):
        cuts = sorted(draw(st.lists(st.integers(0, n - 1), max_size=4, unique=True)))
        busy = tuple((cuts[i], cuts[i + 1] - 1 if i + 1 < len(cuts) and cuts[i + 1] > cuts[i] else cuts[i])
                     for i in range(0, len(cuts), 2))  # disjoint spans
        shares = draw(st.sampled_from([-1] + [a for a, _ in busy]))
        homes.append(Home(draw(SIZES), busy, shares))
    return temps, homes


@settings(max_examples=300, deadline=None)
@given(placements())
def test_assign_places_as_the_reference_does(case):
    temps, homes = case
    assert assign(24, temps, homes).home_of == reference_assign(temps, homes)
