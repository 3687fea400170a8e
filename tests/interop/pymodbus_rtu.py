"""pymodbus with RTU framing, for interoperability tests of parkguard's RTU transports.

Usage:
  pymodbus_rtu.py SPEC.json rtu-over-tcp
      A TCP server with pymodbus's RTU framer (a serial server in transparent mode). Binds
      127.0.0.1 port 0 and prints `listening PORT`.
  pymodbus_rtu.py SPEC.json serial BAUD PARITY STOP
      pymodbus's serial server (RTU framer) on a pseudo-terminal, behind a relay that plays
      the RS-485 line: it prints `gateway-end PATH` (the pseudo-terminal parkguard opens), then
      one JSON line per request frame parkguard sends: {"t": monotonic seconds, "unit",
      "function", "line": the settings parkguard's end was set to, "heard": whether the unit
      heard it}.

SPEC is as for pymodbus_server.py. Unit ids not in SPEC never answer, like an absent or dead
device on a bus: pymodbus 3.16 answers them with an exception even with
`ignore_missing_devices`, so that answer is swallowed on its way out (`trace_packet`).

A pseudo-terminal has no baud rate or parity, so parkguard would reach the unit at any
setting. The relay makes the line behave like a real one: it reads the settings parkguard
gave its end (termios of the pseudo-terminal's slave side, which this process also holds
open) each time a frame arrives, and passes the frame to pymodbus only when they equal the
unit's BAUD PARITY STOP (PARITY is N, E or O). Otherwise the frame is dropped, as a device on
a mismatched line hears only garbage that fails its CRC and stays silent.

What Linux keeps of a pseudo-terminal's termios: the baud rate, CSTOPB and PARODD, and the
input flags; it clears PARENB and forces CS8. So parity enabled is read from INPCK (parity
checking of input, which serial libraries set together with PARENB: serialport-rs does) or
PARENB, odd from PARODD; data bits cannot be learned and are taken as 8.
"""

import asyncio
import fcntl
import json
import os
import select
import struct
import sys
import termios
import threading
import time
import tty

from pymodbus import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pymodbus_server import context_of  # noqa: E402

# struct termios2 and TCGETS2 (Linux, asm-generic and x86): serial libraries set the baud rate
# with termios2 (BOTHER and the speed in c_ospeed, as serialport-rs does), which the classic
# tcgetattr reports only as BOTHER; TCGETS2 gives the speed itself.
TERMIOS2 = struct.Struct("4I B 19s 2I")
TCGETS2 = 0x80000000 | (TERMIOS2.size << 16) | (ord("T") << 8) | 0x2A


# An RTU frame ends with 3.5 characters of silence; a pseudo-terminal delivers a frame at once,
# so a pause this long ends one that is not complete by its length.
FRAME_GAP_S = 0.02


def line_of(fd):
    """The settings parkguard's end of the line is set to, e.g. `19200 8E1`."""
    raw = fcntl.ioctl(fd, TCGETS2, bytes(TERMIOS2.size))
    iflag, _oflag, cflag, _lflag, _line, _cc, _ispeed, ospeed = TERMIOS2.unpack(raw)
    if cflag & termios.PARENB or iflag & termios.INPCK:
        parity = "O" if cflag & termios.PARODD else "E"
    else:
        parity = "N"
    stop = 2 if cflag & termios.CSTOPB else 1
    return f"{ospeed} 8{parity}{stop}"


def request_length(buf):
    """Length of the request frame at the start of `buf`, or None until it is known."""
    if len(buf) < 2:
        return None
    function = buf[1]
    if function in (1, 2, 3, 4, 5, 6):
        return 8
    if function in (15, 16):
        return 9 + buf[6] if len(buf) >= 7 else None
    return len(buf)


def relay(gateway_master, gateway_slave, device_master, expected):
    pending = b""
    while True:
        readable, _, _ = select.select(
            [gateway_master, device_master], [], [], FRAME_GAP_S
        )
        if device_master in readable:
            os.write(gateway_master, os.read(device_master, 4096))
        if gateway_master in readable:
            pending += os.read(gateway_master, 4096)
        while pending:
            n = request_length(pending)
            if n is None or n > len(pending):
                if gateway_master in readable:
                    break
                # Silence: whatever is pending is a frame, complete or not.
                n = len(pending)
            frame, pending = pending[:n], pending[n:]
            line = line_of(gateway_slave)
            heard = line == expected
            if heard:
                os.write(device_master, frame)
            print(
                json.dumps(
                    {
                        "t": time.monotonic(),
                        "unit": frame[0],
                        "function": frame[1] if len(frame) > 1 else None,
                        "line": line,
                        "heard": heard,
                    }
                ),
                flush=True,
            )


def silence_missing(units):
    """A `trace_packet` hook that drops the answers to unit ids not in `units`."""

    def trace(sending, data):
        if sending and data and data[0] not in units:
            return b""
        return data

    return trace


async def serve_rtu_over_tcp(context, units):
    server = ModbusTcpServer(
        context,
        framer=FramerType.RTU,
        address=("127.0.0.1", 0),
        trace_packet=silence_missing(units),
    )
    await server.serve_forever(background=True)
    port = server.transport.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    await server.serving


async def serve_serial(context, units, baud, parity, stop):
    gateway_master, gateway_slave = os.openpty()
    device_master, device_slave = os.openpty()
    for fd in (gateway_slave, device_slave):
        tty.setraw(fd)
    server = ModbusSerialServer(
        context,
        framer=FramerType.RTU,
        port=os.ttyname(device_slave),
        # The relay checks the line; this pseudo-terminal only carries bytes. (pyserial's second
        # configuration of a pseudo-terminal with parity fails with EINVAL, so none here.)
        baudrate=baud,
        parity="N",
        stopbits=stop,
        bytesize=8,
        trace_packet=silence_missing(units),
    )
    await server.serve_forever(background=True)
    expected = f"{baud} 8{parity}{stop}"
    threading.Thread(
        target=relay,
        args=(gateway_master, gateway_slave, device_master, expected),
        daemon=True,
    ).start()
    print(f"gateway-end {os.ttyname(gateway_slave)}", flush=True)
    await server.serving


def main():
    spec_path, mode = sys.argv[1], sys.argv[2]
    context = context_of(spec_path)
    with open(spec_path, encoding="utf-8") as f:
        units = {entry["unit"] for entry in json.load(f)}
    if mode == "rtu-over-tcp":
        asyncio.run(serve_rtu_over_tcp(context, units))
    elif mode == "serial":
        baud, parity, stop = int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        asyncio.run(serve_serial(context, units, baud, parity, stop))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
