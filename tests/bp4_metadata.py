"""A minimal reader of the metadata of an ADIOS2 BP4 folder (``fields.bp``), for the tests.

There is no ``adios2`` Python module in the wheel environment, but everything ParaView's
ADIOS2VTXReader uses to find fields and times is in the BP4 metadata: ``md.idx`` has one
64-byte record per step, pointing at that step's variables index in ``md.0``; each variable
entry has one set of characteristics per writing rank (block), among them the value of a
scalar (the ``step`` variable holds the time) and the min/max of an array. The ``vtk.xml``
attribute that names the fields is stored as plain text. Layout: ADIOS2's BP4 serializer
(``BP4Serializer::PutVariableMetadataInIndex``, ``BPBase`` type and characteristic ids).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "read_steps", "vtk_xml"]

# BP data type id -> struct format.
_FORMATS = {0: "b", 1: "h", 2: "i", 4: "q", 50: "B", 51: "H", 52: "I", 54: "Q", 5: "f", 6: "d",
            55: "b"}
_VALUE, _MIN, _MAX, _OFFSET, _DIMENSIONS = 0, 1, 2, 3, 4
_PAYLOAD_OFFSET, _FILE_INDEX, _TIME_INDEX, _MINMAX = 6, 7, 8, 12


@dataclass
class Block:
    """One rank's characteristics of one variable in one step."""

    step: int
    ndim: int
    value: float | int | None = None  # scalars
    min: float | int | None = None  # arrays
    max: float | int | None = None


def _block(md: bytes, p: int, dtype: int) -> tuple[Block, int]:
    count, length = struct.unpack_from("<BI", md, p)
    p += 5
    end = p + length
    fmt = "<" + _FORMATS[dtype]
    size = struct.calcsize(fmt)
    block = Block(step=-1, ndim=0)
    for _ in range(count):
        cid = md[p]
        p += 1
        if cid in (_VALUE, _MIN, _MAX):
            number = struct.unpack_from(fmt, md, p)[0]
            p += size
            setattr(block, {_VALUE: "value", _MIN: "min", _MAX: "max"}[cid], number)
        elif cid in (_OFFSET, _PAYLOAD_OFFSET):
            p += 8
        elif cid == _FILE_INDEX:
            p += 4
        elif cid == _TIME_INDEX:
            block.step = struct.unpack_from("<I", md, p)[0]
            p += 4
        elif cid == _DIMENSIONS:
            block.ndim, dims_length = struct.unpack_from("<BH", md, p)
            p += 3 + dims_length
        elif cid == _MINMAX:
            subblocks = struct.unpack_from("<H", md, p)[0]
            block.min, block.max = struct.unpack_from("<2" + _FORMATS[dtype], md, p + 2)
            p += 2 + 2 * size
            if subblocks > 1:
                raise ValueError("BP4 per-subblock statistics are not supported")
        else:
            raise ValueError(f"unknown BP4 characteristic id {cid}")
    if p != end:
        raise ValueError(f"BP4 characteristics length mismatch ({p} != {end})")
    return block, p


def read_steps(folder: str | Path) -> list[dict[str, list[Block]]]:
    """For each step of a BP4 folder: variable name -> one :class:`Block` per writer."""
    folder = Path(folder)
    md = (folder / "md.0").read_bytes()
    index = (folder / "md.idx").read_bytes()
    steps = []
    for record in range(64, len(index), 64):  # a 64-byte header, then one record per step
        variables_start = struct.unpack_from("<8Q", index, record)[3]
        count = struct.unpack_from("<IQ", md, variables_start)[0]
        p = variables_start + 12
        variables: dict[str, list[Block]] = {}
        for _ in range(count):
            entry_length = struct.unpack_from("<I", md, p)[0]
            end = p + 4 + entry_length
            p += 8  # length, member id
            p += 2 + struct.unpack_from("<H", md, p)[0]  # group name
            name_length = struct.unpack_from("<H", md, p)[0]
            name = md[p + 2:p + 2 + name_length].decode()
            p += 2 + name_length + 2  # name, then order ('K' row-major) and a spare byte
            dtype = md[p]
            sets = struct.unpack_from("<Q", md, p + 1)[0]
            p += 9
            blocks = []
            for _ in range(sets):
                block, p = _block(md, p, dtype)
                blocks.append(block)
            if p != end:
                raise ValueError(f"BP4 variable entry {name!r}: length mismatch")
            variables[name] = blocks
        steps.append(variables)
    return steps


def vtk_xml(folder: str | Path) -> str:
    """The ``vtk.xml`` attribute VTX writes: the mesh and field names ParaView reads."""
    md = (Path(folder) / "md.0").read_bytes()
    start = md.index(b"<?xml")
    end = md.index(b"</VTKFile>", start) + len(b"</VTKFile>")
    return md[start:end].decode()
