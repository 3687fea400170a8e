"""A Modbus TCP server built on pymodbus, for interoperability tests of parkguard.

Usage: pymodbus_server.py SPEC.json PORT

SPEC is a list of {"unit", "area", "address", "type", "order", "value"}: each typed value is
encoded by pymodbus's own `convert_to_registers` (so the byte layout comes from an
implementation parkguard did not write), laid out in the given word order, and served from
the unit's register bank. `area` is holding, input, coil or discrete; `address` is the PDU
address (0-based); `type` is a pymodbus DATATYPE name or "BOOL"; `order` is ABCD, CDAB, BADC
or DCBA.
"""

import asyncio
import json
import sys

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.datastore import (
    ModbusDeviceContext,
    ModbusServerContext,
    ModbusSequentialDataBlock,
)
from pymodbus.server import StartAsyncTcpServer

DATATYPE = ModbusClientMixin.DATATYPE


def words_of(entry):
    data_type = DATATYPE[entry["type"]]
    order = entry["order"]
    words = ModbusClientMixin.convert_to_registers(
        entry["value"],
        data_type,
        word_order="little" if order in ("CDAB", "DCBA") else "big",
    )
    if order in ("BADC", "DCBA"):
        words = [((w & 0xFF) << 8) | (w >> 8) for w in words]
    return words


def context_of(spec_path):
    """The server context serving SPEC's units (see the module's doc)."""
    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    banks = {}
    for entry in spec:
        unit = banks.setdefault(entry["unit"], {"holding": {}, "input": {}, "coil": {}, "discrete": {}})
        bank = unit[entry["area"]]
        if entry["type"] == "BOOL":
            bank[entry["address"]] = bool(entry["value"])
        else:
            for i, word in enumerate(words_of(entry)):
                bank[entry["address"] + i] = word

    def block(values):
        # Sequential, so that a read bridging a gap between mapped registers is answered
        # (with zeros) as a real device would. pymodbus numbers cells from 1 (the Modbus data
        # model): PDU address a is cell a + 1.
        size = max(values, default=0) + 2
        cells = [values.get(a, 0) for a in range(size)]
        return ModbusSequentialDataBlock(1, cells)

    devices = {
        unit_id: ModbusDeviceContext(
            hr=block(b["holding"]),
            ir=block(b["input"]),
            co=block(b["coil"]),
            di=block(b["discrete"]),
        )
        for unit_id, b in banks.items()
    }
    return ModbusServerContext(devices=devices, single=False)


def main():
    spec_path, port = sys.argv[1], int(sys.argv[2])
    context = context_of(spec_path)
    print("serving", flush=True)
    asyncio.run(StartAsyncTcpServer(context=context, address=("127.0.0.1", port)))


if __name__ == "__main__":
    main()
