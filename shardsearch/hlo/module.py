"""Optimized HLO text as computations of instructions: just enough structure to walk it.

Each instruction keeps its result type, opcode, operand names, attribute text and the
computations it calls (fusions, while bodies, conditional branches, reducers). Lines
that are no instruction (the module header, the stack-frame tables) are skipped, so
any ``compiled.as_text()`` parses; nothing here raises on text it does not know.
"""

from __future__ import annotations

import dataclasses
import functools
import re

# an array type as printed: f32[32,64], bf16[], f8e4m3fn[8]
ARRAY_TYPE = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]")
# bytes per element of each HLO element type
DTYPE_BYTES = {
    "pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
    "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1,
}

_HEADER = re.compile(r"^\s*(?P<entry>ENTRY\s+)?%?(?P<name>[\w.\-]+)\s*(?:\(.*\)\s*->\s*.*?)?\{\s*$")
_DEF = re.compile(r"^\s*(?P<root>ROOT\s+)?%?(?P<name>[\w.\-]+)\s*=\s*")
_OPCODE = re.compile(r"\s*(?P<op>[a-z][\w\-]*)\(")
# metadata={op_name="..." source_file="..."} may hold any text: dropped before reading attributes
_METADATA = re.compile(r',\s*metadata=\{(?:[^{}"]|"(?:[^"\\]|\\.)*")*\}')
_CALLS_ONE = re.compile(r"\b(calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_CALLS_MANY = re.compile(r"\b(calls|branch_computations|called_computations)=\{([^}]*)\}")


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    type_text: str  # the result type as printed: "f32[32,64]{1,0}" or a tuple "(s32[], f32[8])"
    opcode: str
    operands: tuple[str, ...]  # names (without %); literals such as constant(0)'s "0" are kept too
    operand_types: tuple[str, ...]  # the type printed before each operand's name ("f32[8]{0} %x"), or ""
    attrs: str  # everything after the operand list, metadata removed
    calls: tuple[tuple[str, str], ...]  # (attribute, computation name): ("body", "region_0.3")

    @functools.cached_property
    def arrays(self) -> list[tuple[str, tuple[int, ...]]]:
        """(dtype, dims) of each array in the result type."""
        return _arrays(self.type_text)

    @property
    def is_tuple(self) -> bool:
        return self.type_text.startswith("(")


@dataclasses.dataclass(frozen=True)
class Computation:
    name: str
    is_entry: bool
    instructions: tuple[Instruction, ...]  # in printed (topological) order
    root: str  # the ROOT instruction's name; the last one if none is marked

    @functools.cached_property
    def by_name(self) -> dict[str, Instruction]:
        return {i.name: i for i in self.instructions}

    def operand_dims(self, instr: Instruction, i: int) -> tuple[int, ...] | None:
        """The dims of ``instr``'s operand ``i``: from its definition here, else as printed."""
        if i >= len(instr.operands):
            return None
        source = self.by_name.get(instr.operands[i])
        arrays = _arrays(source.type_text) if source is not None else _arrays(instr.operand_types[i])
        return arrays[0][1] if len(arrays) == 1 else None


def _arrays(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dt, tuple(int(d) for d in dims.split(",") if d)) for dt, dims in ARRAY_TYPE.findall(type_text)]


def _closing(text: str, start: int, open_: str, close: str) -> int:
    """Index just past the bracket that closes the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
    return len(text)


def _top_level_split(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_instruction(line: str) -> Instruction | None:
    m = _DEF.match(line)
    if not m:
        return None
    rest = line[m.end():]
    if rest.startswith("("):  # tuple type
        end = _closing(rest, 0, "(", ")")
    else:
        end = len(rest.split(None, 1)[0]) if rest.strip() else 0
    type_text, after = rest[:end], rest[end:]
    op = _OPCODE.match(after)
    if not type_text or not op:
        return None
    open_at = op.end() - 1
    close_at = _closing(after, open_at, "(", ")")
    # an operand may be printed typed ("f32[8]{0} %x"): its name is the last word
    pieces = _top_level_split(after[open_at + 1: close_at - 1])
    operands = tuple(p.split()[-1].lstrip("%") for p in pieces)
    types = tuple(p.rsplit(None, 1)[0] if len(p.split()) > 1 else "" for p in pieces)
    attrs = _METADATA.sub("", after[close_at:])
    calls = [(k, v) for k, v in _CALLS_ONE.findall(attrs)]
    calls += [(k, n.strip().lstrip("%"))
              for k, many in _CALLS_MANY.findall(attrs) for n in many.split(",") if n.strip()]
    return Instruction(m.group("name"), type_text, op.group("op"), operands, types, attrs, tuple(calls))


def parse_module(hlo_text: str) -> dict[str, Computation]:
    """Computations by name, in printed order (callees before callers in XLA's printing)."""
    out: dict[str, Computation] = {}
    current, is_entry, body, root = None, False, [], None
    for line in hlo_text.splitlines():
        if current is None:
            m = _HEADER.match(line)
            if m and not line.lstrip().startswith("HloModule") and "=" not in line.split("(")[0]:
                current, is_entry, body, root = m.group("name"), bool(m.group("entry")), [], None
            continue
        if line.strip() == "}":
            names = [i.name for i in body]
            out[current] = Computation(current, is_entry, tuple(body), root or (names[-1] if names else ""))
            current = None
            continue
        instr = parse_instruction(line)
        if instr is not None:
            body.append(instr)
            if _DEF.match(line).group("root"):
                root = instr.name
    return out


def entry_of(module: dict[str, Computation]) -> Computation | None:
    return next((c for c in module.values() if c.is_entry), None)
