#!/usr/bin/env python3
"""A receiving centre (监控中心) for GB/T 26875.3-2011, the alarm transmission protocol between a
user information transmission device (用户信息传输装置, "UITD", here: parkguard) and the city's
remote monitoring centre.

Written from the published standard only, with Python's standard library: nothing of
parkguard's code is used, so parkguard's encoder is checked by a second implementation.

    gb26875_centre.py --listen HOST:PORT --address CENTRE [--device DEVICE]
                      [--answer-timeout S] [--retries N] [--partial-timeout S] [--user-version V]
    gb26875_centre.py --self-test DIR      golden frames in DIR, then a loopback session
    gb26875_centre.py --make-golden DIR    write the golden frames (NAME.hex, NAME.json)
    gb26875_centre.py --explain FILE.hex   print a frame's bytes as a Markdown table

The centre listens on TCP (PORT 0: the system picks one), serves one device connection at a
time (a new one replaces the old) and prints everything it sees and does as JSON lines on
stdout; it takes commands as JSON lines on stdin and exits on `{"cmd":"quit"}` or at the end of
stdin. The events and commands are listed in tests/golden/gb26875/README.md ("The centre").

Frame layout (offsets from 0; the standard counts bytes from 1):

    0  2  start "@@"            17  6  ... source address (low byte first)
    2  2  serial (low first)     18  6  destination address (low byte first)
    4  1  major version = 1      24  2  length L of the application data unit (<= 1024)
    5  1  user version           26  1  command
    6  6  time: s, min, h, d, month, year-2000
   27  L  application data unit: type flag, object count, objects (each: body, time tag)
 27+L  1  checksum: sum of bytes 2 .. 26+L, modulo 256
 28+L  2  end "##"
"""

import argparse
import datetime
import json
import os
import queue
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict

START = b"@@"
END = b"##"
HEADER_LEN = 27  # start (2) + control unit (25)
MAX_UNIT = 1024
MAJOR_VERSION = 1

COMMANDS = {1: "control", 2: "send_data", 3: "confirm", 4: "request", 5: "answer", 6: "deny"}
# What a device may send to a centre (control and request go the other way).
FROM_DEVICE = frozenset({2, 3, 5, 6})
# What a centre may send to a device.
FROM_CENTRE = frozenset({1, 3, 4, 6})
# Commands that carry an application data unit; confirm and deny may be empty.
NEED_UNIT = frozenset({1, 2, 4, 5})

# --- bit tables (bit -> name when set; ZERO: bit -> name when clear) ---------------------------

# 部件状态, 2 bytes. Bit 0: 1 running (正常运行), 0 test (测试).
COMPONENT_STATE_BITS = {
    0: "running", 1: "fire", 2: "fault", 3: "disabled", 4: "supervisory",
    5: "started", 6: "feedback", 7: "delay", 8: "power_fault",
}
COMPONENT_STATE_ZERO = {0: "test"}
# 建筑消防设施操作信息, 1 byte (type 4).
FACILITY_OPERATION_BITS = {
    0: "reset", 1: "silence", 2: "manual_alarm", 3: "alarm_cleared",
    4: "self_test", 5: "confirm", 6: "test",
}
# 用户信息传输装置操作信息, 1 byte (type 24).
UITD_OPERATION_BITS = {
    0: "reset", 1: "silence", 2: "manual_alarm", 3: "alarm_cleared",
    4: "self_test", 5: "duty_check_answer", 6: "test",
}
# 用户信息传输装置运行状态, 1 byte (type 21). Bit 0: 1 normal (正常监视), 0 test (测试).
UITD_STATE_BITS = {
    0: "normal", 1: "fire", 2: "fault", 3: "main_power_fault", 4: "backup_power_fault",
    5: "channel_fault", 6: "monitoring_line_fault",
}
UITD_STATE_ZERO = {0: "test"}

DUTY_CHECK_ANSWER_BIT = 5

# --- application data unit types -----------------------------------------------------------
# fields: (name, kind); kinds: u8, u16, u32, i16 (little-endian), desc31 (31-byte GB18030
# string), lstr (1-byte length + GB18030 string), time (6-byte time tag).
# tag: each object is followed by a 6-byte time tag (figure 5; empty for some types).
# count: the standard's fixed object count (1) or its maximum.
# bits: (field, set names, clear names, width in bits) -> field_bits list beside the field.
TYPES = {
    1: {"name": "建筑消防设施系统状态 system state", "dir": "up", "tag": True, "max": 102,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("state", "u16")]},
    2: {"name": "建筑消防设施部件运行状态 component state", "dir": "up", "tag": True, "max": 22,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("component_type", "u8"),
                   ("component_address", "u32"), ("state", "u16"), ("description", "desc31")],
        "bits": ("state", COMPONENT_STATE_BITS, COMPONENT_STATE_ZERO, 16)},
    3: {"name": "建筑消防设施部件模拟量值 component analog value", "dir": "up", "tag": True,
        "max": 63,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("component_type", "u8"),
                   ("component_address", "u32"), ("analog_type", "u8"), ("value", "i16")]},
    4: {"name": "建筑消防设施操作信息 facility operation", "dir": "up", "tag": True, "max": 102,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("operation", "u8"),
                   ("operator", "u8")],
        "bits": ("operation", FACILITY_OPERATION_BITS, {}, 8)},
    5: {"name": "建筑消防设施软件版本 facility software version", "dir": "up", "tag": False,
        "fixed": 1,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("major", "u8"),
                   ("minor", "u8")]},
    6: {"name": "建筑消防设施系统配置情况 system configuration", "dir": "up", "tag": False,
        "max": 3,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("description", "lstr")]},
    7: {"name": "建筑消防设施部件配置情况 component configuration", "dir": "up", "tag": False,
        "max": 26,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("component_type", "u8"),
                   ("component_address", "u32"), ("description", "desc31")]},
    8: {"name": "建筑消防设施系统时间 facility system time", "dir": "up", "tag": False,
        "fixed": 1,
        "fields": [("system_type", "u8"), ("system_address", "u8"), ("time", "time")]},
    21: {"name": "用户信息传输装置运行状态 UITD run state", "dir": "up", "tag": True, "fixed": 1,
         "fields": [("state", "u8")],
         "bits": ("state", UITD_STATE_BITS, UITD_STATE_ZERO, 8)},
    24: {"name": "用户信息传输装置操作信息 UITD operation", "dir": "up", "tag": True, "max": 127,
         "fields": [("operation", "u8"), ("operator", "u8")],
         "bits": ("operation", UITD_OPERATION_BITS, {}, 8)},
    25: {"name": "用户信息传输装置软件版本 UITD software version", "dir": "up", "tag": False,
         "fixed": 1, "fields": [("major", "u8"), ("minor", "u8")]},
    26: {"name": "用户信息传输装置配置情况 UITD configuration", "dir": "up", "tag": False,
         "fixed": 1, "fields": [("description", "lstr")]},
    28: {"name": "用户信息传输装置系统时间 UITD system time", "dir": "up", "tag": False,
         "fixed": 1, "fields": [("time", "time")]},
    90: {"name": "同步用户信息传输装置时钟 clock sync", "dir": "down", "tag": False, "fixed": 1,
         "fields": [("time", "time")]},
    91: {"name": "查岗命令 duty check", "dir": "down", "tag": False, "fixed": 1,
         "fields": [("timeout_minutes", "u8")]},
}

SIZES = {"u8": 1, "u16": 2, "u32": 4, "i16": 2, "desc31": 31, "time": 6}
PACK = {"u8": "<B", "u16": "<H", "u32": "<I", "i16": "<h"}

# For --explain only: a few names from the standard's tables 4, 5 and 6.
SYSTEM_TYPES = {0: "通用 general", 1: "火灾报警系统 fire alarm system",
                10: "消防联动控制器 linkage controller"}
COMPONENT_TYPES = {0: "通用 general", 1: "火灾报警控制器 fire alarm controller",
                   10: "可燃气体探测器 combustible gas detector",
                   11: "点型可燃气体探测器 point combustible gas detector",
                   17: "剩余电流式电气火灾监控探测器 residual current detector",
                   18: "测温式电气火灾监控探测器 temperature electrical-fire detector",
                   23: "手动火灾报警按钮 manual call point",
                   42: "点型光电感烟火灾探测器 point photoelectric smoke detector"}
ANALOG_TYPES = {1: ("事件计数 event count", 1, "件"), 2: ("高度 height", 0.01, "m"),
                3: ("温度 temperature", 0.1, "°C"), 4: ("压力 pressure", 0.1, "MPa"),
                5: ("压力 pressure", 0.1, "kPa"), 6: ("气体浓度 gas concentration", 0.1, "%LEL"),
                7: ("时间 time", 1, "s"), 8: ("电压 voltage", 0.1, "V"),
                9: ("电流 current", 0.1, "A"), 10: ("流量 flow", 0.1, "L/s"),
                11: ("风量 air volume", 0.1, "m³/min"), 12: ("风速 wind speed", 1, "m/s")}


def problem(what, detail, **extra):
    p = {"what": what, "detail": detail}
    p.update(extra)
    return p


# --- time tags --------------------------------------------------------------------------------

TIME_RE = re.compile(r"(\d{4})-(\d{2,3})-(\d{2,3})T(\d{2,3}):(\d{2,3}):(\d{2,3})")


def time_text(b):
    """The 6-byte time tag (second, minute, hour, day, month, year - 2000) as text; written even
    when it is not a valid date (then `time_valid` says so)."""
    s, mi, h, d, mo, y = b
    return f"{2000 + y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}"


def time_valid(b):
    s, mi, h, d, mo, y = b
    if y > 99:
        return False
    try:
        datetime.datetime(2000 + y, mo, d, h, mi, s)
    except ValueError:
        return False
    return True


def time_bytes(text):
    """Inverse of time_text (also for invalid dates, so that any tag round-trips)."""
    m = TIME_RE.fullmatch(text)
    if not m:
        raise ValueError(f"time {text!r} is not YYYY-MM-DDTHH:MM:SS")
    y, mo, d, h, mi, s = (int(g) for g in m.groups())
    out = [s, mi, h, d, mo, y - 2000]
    if any(not 0 <= v <= 255 for v in out):
        raise ValueError(f"time {text!r} does not fit the 6-byte time tag")
    return bytes(out)


def time_of(dt):
    if not 2000 <= dt.year <= 2099:
        raise ValueError("the time tag holds years 2000-2099 only")
    return bytes([dt.second, dt.minute, dt.hour, dt.day, dt.month, dt.year - 2000])


def local_now():
    return datetime.datetime.now().replace(microsecond=0)


# --- bits -------------------------------------------------------------------------------------

def bit_names(value, names, zero_names, width):
    out = []
    for bit in range(width):
        if value >> bit & 1:
            out.append(names.get(bit, f"reserved_bit_{bit}"))
        elif bit in zero_names:
            out.append(zero_names[bit])
    return out


def reserved_bits(value, names, width):
    return [b for b in range(width) if value >> b & 1 and b not in names]


# --- strings ----------------------------------------------------------------------------------

def decode_text(raw, where, problems):
    """GB18030 text with trailing NULs and spaces stripped."""
    stripped = raw.rstrip(b"\x00 ")
    try:
        text = stripped.decode("gb18030")
    except UnicodeDecodeError as e:
        problems.append(problem("description", f"{where}: not valid GB18030 ({e.reason} at byte "
                                f"{e.start})", raw=raw.hex()))
        text = stripped.decode("gb18030", errors="replace")
    if "\x00" in text:
        problems.append(problem("description", f"{where}: NUL inside the text", raw=raw.hex()))
    return text


def encode_text(text, size=None):
    b = text.encode("gb18030")
    if size is not None:
        if len(b) > size:
            raise ValueError(f"{text!r} is {len(b)} bytes in GB18030, more than {size}")
        b = b + b"\x00" * (size - len(b))
    return b


# --- application data unit --------------------------------------------------------------------

class UnitError(Exception):
    """An application data unit that cannot be decoded: the frame is refused ("unit")."""

    def __init__(self, detail, problem_=None):
        super().__init__(detail)
        self.detail = detail
        self.problem = problem_


def decode_unit(data):
    """-> (unit dict, problems). Raises UnitError when the unit's bytes do not fit its type."""
    problems = []
    if len(data) < 2:
        raise UnitError(f"an application data unit of {len(data)} byte(s): it needs at least "
                        "the type flag and the object count")
    t, n = data[0], data[1]
    spec = TYPES.get(t)
    if spec is None:
        problems.append(problem("unknown_type", f"type flag {t} is not decoded (reserved, "
                                "user-defined or a downlink read)", type=t))
        return {"type": t, "body": data[1:].hex()}, problems
    objects = []
    pos = 2
    for i in range(n):
        obj = {}
        for name, kind in spec["fields"]:
            if kind == "lstr":
                if pos >= len(data):
                    raise_count(t, n, i, data)
                length = data[pos]
                pos += 1
                if pos + length > len(data):
                    raise_count(t, n, i, data)
                obj[name] = decode_text(data[pos:pos + length], f"object {i + 1} {name}",
                                        problems)
                pos += length
                continue
            size = SIZES[kind]
            if pos + size > len(data):
                raise_count(t, n, i, data)
            raw = data[pos:pos + size]
            pos += size
            if kind == "desc31":
                obj[name] = decode_text(raw, f"object {i + 1} {name}", problems)
            elif kind == "time":
                obj[name] = time_text(raw)
                if not time_valid(raw):
                    problems.append(problem("time_tag", f"object {i + 1} {name} {raw.hex()} is "
                                            "not a valid date", raw=raw.hex()))
            else:
                obj[name] = struct.unpack(PACK[kind], raw)[0]
            if "bits" in spec and spec["bits"][0] == name:
                _, names, zero, width = spec["bits"]
                obj[name + "_bits"] = bit_names(obj[name], names, zero, width)
                res = reserved_bits(obj[name], names, width)
                if res:
                    problems.append(problem("reserved_bits", f"object {i + 1} {name} "
                                            f"0x{obj[name]:x} sets reserved bit(s) {res}"))
        if spec["tag"]:
            if pos + 6 > len(data):
                raise_count(t, n, i, data)
            raw = data[pos:pos + 6]
            pos += 6
            obj["time"] = time_text(raw)
            if not time_valid(raw):
                problems.append(problem("time_tag", f"object {i + 1} time tag {raw.hex()} is not "
                                        "a valid date", raw=raw.hex()))
        objects.append(obj)
    if pos != len(data):
        raise UnitError(
            f"type {t} declares {n} object(s), which take {pos} bytes, but the unit has "
            f"{len(data)}",
            problem("object_count", f"type {t}: {n} object(s) declared, {len(data) - 2} bytes "
                    f"of objects", type=t, count=n, length=len(data)))
    if n == 0:
        problems.append(problem("object_count", f"type {t} with no objects", type=t, count=0))
    elif "fixed" in spec and n != spec["fixed"]:
        problems.append(problem("object_count", f"type {t} has {n} objects; the standard "
                                f"sends exactly {spec['fixed']}", type=t, count=n))
    elif "max" in spec and n > spec["max"]:
        problems.append(problem("object_count", f"type {t} has {n} objects; at most "
                                f"{spec['max']}", type=t, count=n))
    return {"type": t, "objects": objects}, problems


def raise_count(t, n, i, data):
    raise UnitError(
        f"type {t} declares {n} object(s) but the unit's {len(data)} bytes end inside object "
        f"{i + 1}",
        problem("object_count", f"type {t}: {n} object(s) declared, {len(data) - 2} bytes of "
                "objects", type=t, count=n, length=len(data)))


def encode_unit(unit):
    if unit is None:
        return b""
    t = unit["type"]
    spec = TYPES.get(t)
    if spec is None:
        return bytes([t]) + bytes.fromhex(unit["body"])
    out = bytearray([t, len(unit["objects"])])
    for obj in unit["objects"]:
        for name, kind in spec["fields"]:
            v = obj[name]
            if kind == "lstr":
                b = encode_text(v)
                out += bytes([len(b)]) + b
            elif kind == "desc31":
                out += encode_text(v, 31)
            elif kind == "time":
                out += time_bytes(v)
            else:
                out += struct.pack(PACK[kind], v)
        if spec["tag"]:
            out += time_bytes(obj["time"])
    return bytes(out)


# --- frames -----------------------------------------------------------------------------------

class FrameError(Exception):
    """A frame refused by the checks of 6.5.3 and table 1 (reason: checksum, start, end,
    length, version, destination, source, command, unit)."""

    def __init__(self, reason, detail, problem_=None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.problem = problem_


def checksum(raw_without_tail):
    """Sum of the control unit (bytes 2..26) and the application data unit, modulo 256."""
    return sum(raw_without_tail[2:]) & 0xFF


def encode_frame(serial, version, time_tag, source, destination, command, unit_bytes=b""):
    if len(unit_bytes) > MAX_UNIT:
        raise ValueError(f"an application data unit of {len(unit_bytes)} bytes (max {MAX_UNIT})")
    body = bytearray(START)
    body += struct.pack("<H", serial)
    body += bytes(version)
    body += time_tag
    body += source.to_bytes(6, "little")
    body += destination.to_bytes(6, "little")
    body += struct.pack("<H", len(unit_bytes))
    body += bytes([command])
    body += unit_bytes
    body.append(checksum(body))
    body += END
    return bytes(body)


def frame_from_json(d):
    """Encode a decoded frame (the golden .json form) back into bytes."""
    return encode_frame(d["serial"], d["version"], time_bytes(d["time"]), d["source"],
                        d["destination"], d["command"], encode_unit(d["unit"]))


def header_fields(raw):
    """The control unit's fields as read (no checks); raw holds at least HEADER_LEN bytes."""
    return {
        "serial": raw[2] | raw[3] << 8,
        "version": [raw[4], raw[5]],
        "time": time_text(raw[6:12]),
        "source": int.from_bytes(raw[12:18], "little"),
        "destination": int.from_bytes(raw[18:24], "little"),
        "length": raw[24] | raw[25] << 8,
        "command": raw[26],
    }


def decode_frame(raw, allowed_commands=frozenset(COMMANDS), destination=None, source=None):
    """One complete frame -> (frame dict, problems). Raises FrameError."""
    if len(raw) < HEADER_LEN + 3:
        raise FrameError("length", f"{len(raw)} bytes: shorter than the smallest frame (30)")
    if raw[:2] != START:
        raise FrameError("start", f"starts with {raw[:2].hex()}, not 4040 (@@)")
    h = header_fields(raw)
    if h["length"] > MAX_UNIT:
        raise FrameError("length", f"length field {h['length']} is more than {MAX_UNIT}")
    if h["length"] != len(raw) - HEADER_LEN - 3:
        raise FrameError("length", f"length field {h['length']} but the frame holds "
                         f"{len(raw) - HEADER_LEN - 3} bytes of application data")
    if raw[-2:] != END:
        raise FrameError("end", f"ends with {raw[-2:].hex()}, not 2323 (##)")
    want = checksum(raw[:-3])
    if raw[-3] != want:
        raise FrameError("checksum", f"checksum byte 0x{raw[-3]:02x}, the bytes sum to "
                         f"0x{want:02x}")
    if h["command"] not in allowed_commands:
        what = COMMANDS.get(h["command"], "reserved or user-defined")
        raise FrameError("command", f"command byte {h['command']} ({what}) is not one this "
                         "side accepts")
    if h["version"][0] != MAJOR_VERSION:
        raise FrameError("version", f"major version {h['version'][0]}, not {MAJOR_VERSION}")
    if destination is not None and h["destination"] != destination:
        raise FrameError("destination", f"destination {h['destination']}, not {destination}")
    if source is not None and h["source"] != source:
        raise FrameError("source", f"source {h['source']}, not {source}")
    problems = []
    if not time_valid(raw[6:12]):
        problems.append(problem("time_tag", f"the frame's time tag {raw[6:12].hex()} is not a "
                                "valid date", raw=raw[6:12].hex()))
    data = raw[HEADER_LEN:-3]
    unit = None
    if data:
        try:
            unit, more = decode_unit(data)
        except UnitError as e:
            raise FrameError("unit", e.detail, e.problem) from None
        problems += more
    elif h["command"] in NEED_UNIT:
        raise FrameError("unit", f"command {h['command']} ({COMMANDS[h['command']]}) without an "
                         "application data unit")
    frame = {k: h[k] for k in ("serial", "version", "time", "source", "destination", "command")}
    frame["unit"] = unit
    for p in problems:
        p.setdefault("serial", h["serial"])
    return frame, problems


class Splitter:
    """Cuts a TCP byte stream into frames: yields ("frame", raw) or ("bad", reason, raw,
    detail). A frame with a bad length or end is skipped by its start only, and the search for
    "@@" goes on from there (the bytes in between come out as "start" errors)."""

    def __init__(self):
        self.buf = bytearray()

    def feed(self, data):
        self.buf += data
        out = []
        b = self.buf
        while b:
            if not b.startswith(START):
                i = b.find(START)
                if i < 0:
                    i = len(b) - 1 if b.endswith(b"@") else len(b)
                    if i == 0:
                        break
                garbage = bytes(b[:i])
                del b[:i]
                out.append(("bad", "start", garbage, f"{len(garbage)} byte(s) outside a frame "
                            "(no @@ start)"))
                continue
            if len(b) < HEADER_LEN:
                break
            length = b[24] | b[25] << 8
            if length > MAX_UNIT:
                raw = bytes(b[:HEADER_LEN])
                del b[:2]
                out.append(("bad", "length", raw, f"length field {length} is more than "
                            f"{MAX_UNIT}"))
                continue
            total = HEADER_LEN + length + 3
            if len(b) < total:
                break
            raw = bytes(b[:total])
            if raw[-2:] != END:
                del b[:2]
                out.append(("bad", "end", raw, f"length field {length}, and the bytes there "
                            f"are {raw[-2:].hex()}, not 2323 (##)"))
                continue
            del b[:total]
            out.append(("frame", raw))
        return out

    def flush(self, why):
        """The unfinished rest (truncated frame or stray "@"), as a bad frame, or None."""
        if not self.buf:
            return None
        raw = bytes(self.buf)
        self.buf.clear()
        if raw.startswith(START):
            return ("bad", "length", raw, f"{why} after {len(raw)} byte(s) of an unfinished "
                    "frame")
        return ("bad", "start", raw, f"{len(raw)} byte(s) outside a frame (no @@ start)")


# --- the centre -------------------------------------------------------------------------------

class Centre:
    def __init__(self, host, port, address, device=None, emit=None, clock=local_now,
                 answer_timeout=10.0, retries=3, partial_timeout=2.0, user_version=0):
        self.address = address
        self.device = device
        self.emit = emit or print_event
        self.clock = clock
        self.answer_timeout = answer_timeout
        self.retries = retries
        self.partial_timeout = partial_timeout
        self.version = [MAJOR_VERSION, user_version]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(4)
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        # select(), not epoll: stdin may be a regular file or /dev/null.
        self.sel = selectors.SelectSelector()
        self.conn = None
        self.splitter = Splitter()
        self.last_rx = 0.0
        self.serial = 0                 # the centre's own serial: first control frame gets 1
        self.pending = {}               # serial -> control awaiting the device's answer
        self.finished = OrderedDict()   # serials of controls already answered or given up
        self.seen = OrderedDict()       # device send-data serial -> (command, unit bytes)
        self.last_new = None            # serial of the device's last new send-data frame
        self.deny_left = 0
        self.ignore_left = 0
        self.duty = None                # the duty check awaiting an operator's answer
        self.peer_address = None        # learnt from frames when --device is not given
        self.cmd_buf = b""
        self.running = False

    # -- loop --

    def run(self, cmd_fd):
        self.sel.register(self.sock, selectors.EVENT_READ, "accept")
        self.sel.register(cmd_fd, selectors.EVENT_READ, "cmd")
        self.cmd_fd = cmd_fd
        self.running = True
        self.emit({"event": "listening", "port": self.port, "address": self.address})
        try:
            while self.running:
                for key, _ in self.sel.select(self.next_timeout()):
                    if not self.running:
                        break
                    if key.data == "accept":
                        self.accept()
                    elif key.data == "cmd":
                        self.read_commands()
                    elif key.data == "conn" and key.fileobj is self.conn:
                        self.read_conn()
                self.timers()
        finally:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self.sel.close()
            self.sock.close()

    def next_timeout(self):
        now = time.monotonic()
        deadlines = [c["deadline"] for c in self.pending.values()]
        if self.splitter.buf:
            deadlines.append(self.last_rx + self.partial_timeout)
        if self.duty is not None:
            deadlines.append(self.duty["deadline"])
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - now)

    def timers(self):
        now = time.monotonic()
        for serial, c in list(self.pending.items()):
            if now >= c["deadline"]:
                self.emit({"event": "timeout", "to": c["to"], "serial": serial})
                self.retransmit(serial, c, now)
        if self.splitter.buf and now - self.last_rx >= self.partial_timeout:
            self.bad(self.splitter.flush(f"nothing more for {self.partial_timeout} s"))
        if self.duty is not None and now >= self.duty["deadline"]:
            self.emit({"event": "duty_check_unanswered", "serial": self.duty["serial"],
                       "timeout_minutes": self.duty["timeout_minutes"]})
            self.duty = None

    def retransmit(self, serial, c, now):
        if c["tries_left"] > 0 and self.conn is not None:
            c["tries_left"] -= 1
            c["deadline"] = now + self.answer_timeout
            # A retransmission keeps the serial and the content; only the time tag is new.
            raw = encode_frame(serial, self.version, time_of(self.clock()), self.address,
                               c["destination"], 1, c["unit"])
            self.send(raw, c["to"], retransmission=True)
        else:
            del self.pending[serial]
            self.finish(serial)
            self.emit({"event": "control_failed", "to": c["to"], "serial": serial,
                       "why": "no connection" if self.conn is None else "no confirm after "
                       f"{self.retries} retransmission(s)"})

    def finish(self, serial):
        self.finished[serial] = True
        while len(self.finished) > 64:
            self.finished.popitem(last=False)

    # -- connection --

    def accept(self):
        try:
            conn, peer = self.sock.accept()
        except BlockingIOError:
            return
        if self.conn is not None:
            self.disconnect("centre", "replaced by a new connection")
        conn.settimeout(5.0)
        self.conn = conn
        self.sel.register(conn, selectors.EVENT_READ, "conn")
        self.emit({"event": "connected", "peer": f"{peer[0]}:{peer[1]}"})

    def disconnect(self, by, why):
        rest = self.splitter.flush("connection closed")
        if rest:
            self.bad(rest, deny=False)
        self.sel.unregister(self.conn)
        self.conn.close()
        self.conn = None
        self.emit({"event": "disconnected", "by": by, "why": why})
        for serial, c in list(self.pending.items()):
            del self.pending[serial]
            self.finish(serial)
            self.emit({"event": "control_failed", "to": c["to"], "serial": serial,
                       "why": "disconnected"})

    def read_conn(self):
        try:
            data = self.conn.recv(65536)
        except OSError as e:
            self.disconnect("device", f"receive failed: {e}")
            return
        if not data:
            self.disconnect("device", "end of stream")
            return
        self.last_rx = time.monotonic()
        for item in self.splitter.feed(data):
            if item[0] == "frame":
                self.on_frame(item[1])
            else:
                self.bad(item)
            if self.conn is None:
                break

    def send(self, raw, what, retransmission=False):
        event = {"event": "sent", "command": raw[26], "serial": raw[2] | raw[3] << 8,
                 "what": what}
        if retransmission:
            event["retransmission"] = True
        event["raw"] = raw.hex()
        if self.conn is None:
            return False
        try:
            self.conn.sendall(raw)
        except OSError as e:
            self.disconnect("device", f"send failed: {e}")
            return False
        self.emit(event)
        return True

    def answer(self, command, serial, destination):
        raw = encode_frame(serial, self.version, time_of(self.clock()), self.address,
                           destination, command)
        self.send(raw, "confirm" if command == 3 else "deny")

    # -- frames --

    def bad(self, item, deny=True):
        _, reason, raw, detail = item
        event = {"event": "bad_frame", "reason": reason, "detail": detail, "serial": None}
        readable = len(raw) >= HEADER_LEN and raw.startswith(START)
        if readable:
            event["serial"] = raw[2] | raw[3] << 8
        event["raw"] = raw.hex()
        event["received_at"] = time.time()
        self.emit(event)
        # Deny what can be answered: the serial and the command byte were read, and it is not
        # itself an answer (denying a confirm or a deny would start a ping-pong).
        if deny and readable and raw[26] not in (3, 6):
            self.answer(6, raw[2] | raw[3] << 8, int.from_bytes(raw[12:18], "little"))

    def on_frame(self, raw):
        received_at = time.time()
        try:
            frame, problems = decode_frame(raw, FROM_DEVICE, self.address, self.device)
        except FrameError as e:
            if e.problem:
                p = dict(e.problem)
                p["serial"] = raw[2] | raw[3] << 8
                self.emit_problem(p)
            self.bad(("bad", e.reason, raw, e.detail))
            return
        serial, command, unit = frame["serial"], frame["command"], frame["unit"]
        duplicate = False
        if command == 2:
            content = raw[HEADER_LEN:-3]
            if serial in self.seen:
                duplicate = True
                if self.seen[serial] != content:
                    problems.append(problem(
                        "retransmission_differs", f"serial {serial} came again with different "
                        "content", serial=serial, first=self.seen[serial].hex(),
                        now=content.hex()))
            else:
                if self.last_new is not None:
                    expected = (self.last_new + 1) & 0xFFFF
                    wrapped = self.last_new == 0xFFFF and serial == 1
                    if serial != expected and not wrapped:
                        problems.append(problem(
                            "serial", f"serial {serial} after {self.last_new}: a new frame "
                            f"should have {expected}", serial=serial, expected=expected,
                            previous=self.last_new))
                self.last_new = serial
                self.seen[serial] = content
                while len(self.seen) > 32:
                    self.seen.popitem(last=False)
            if unit is not None and TYPES.get(unit["type"], {}).get("dir") == "down":
                problems.append(problem("direction", f"type {unit['type']} is a downlink type "
                                        "(centre to device)", serial=serial))
        event = {"event": "frame"}
        event.update({k: frame[k] for k in ("serial", "version", "time", "source",
                                             "destination", "command")})
        event["duplicate"] = duplicate
        event["unit"] = unit
        event["raw"] = raw.hex()
        event["received_at"] = received_at
        self.emit(event)
        for p in problems:
            self.emit_problem(p)
        if self.device is None:
            self.peer_address = frame["source"]
        if command == 2:
            if not duplicate:
                self.check_duty_answer(frame)
            if self.ignore_left > 0:
                self.ignore_left -= 1
                self.emit({"event": "ignored", "serial": serial})
            elif self.deny_left > 0:
                self.deny_left -= 1
                self.answer(6, serial, frame["source"])
            else:
                self.answer(3, serial, frame["source"])
        elif command in (3, 6):
            self.on_answer(serial, command)
        elif command == 5:
            self.emit_problem(problem("unsolicited_answer", f"an answer (command 5) with serial "
                                      f"{serial}, but this centre sends no requests",
                                      serial=serial))

    def emit_problem(self, p):
        event = {"event": "problem"}
        event.update(p)
        self.emit(event)

    def on_answer(self, serial, command):
        c = self.pending.get(serial)
        if c is None:
            if serial in self.finished:
                self.emit({"event": "answer", "to": None, "command": command, "serial": serial,
                           "late": True})
            else:
                self.emit_problem(problem(
                    "unsolicited_answer", f"{COMMANDS[command]} with serial {serial}, which "
                    "answers no control frame of this centre", serial=serial))
            return
        self.emit({"event": "answer", "to": c["to"], "command": command, "serial": serial})
        if command == 3:
            del self.pending[serial]
            self.finish(serial)
            if c["to"] == "duty_check" and self.duty is not None \
                    and self.duty["serial"] == serial:
                self.duty["confirmed"] = True
        else:
            self.retransmit(serial, c, time.monotonic())

    def check_duty_answer(self, frame):
        unit = frame["unit"]
        if unit is None or unit["type"] != 24:
            return
        for obj in unit.get("objects", []):
            if obj["operation"] >> DUTY_CHECK_ANSWER_BIT & 1:
                if self.duty is None:
                    self.emit_problem(problem(
                        "duty_answer_unsolicited", "a duty-check answer (type 24 bit 5) with no "
                        "duty check outstanding", serial=frame["serial"]))
                    continue
                after = time.monotonic() - self.duty["sent_at"]
                self.emit({"event": "duty_check_answered", "serial": self.duty["serial"],
                           "frame_serial": frame["serial"], "operator": obj["operator"],
                           "after_seconds": round(after, 3),
                           "within_timeout": after <= self.duty["timeout_minutes"] * 60,
                           "confirmed_first": self.duty.get("confirmed", False)})
                self.duty = None

    # -- commands --

    def read_commands(self):
        data = os.read(self.cmd_fd, 65536)
        if not data:
            if self.cmd_buf.strip():
                self.command_line(self.cmd_buf)
            self.stop("end of stdin")
            return
        self.cmd_buf += data
        while b"\n" in self.cmd_buf and self.running:
            line, self.cmd_buf = self.cmd_buf.split(b"\n", 1)
            if line.strip():
                self.command_line(line)

    def command_line(self, line):
        try:
            cmd = json.loads(line.decode("utf-8"))
            if not isinstance(cmd, dict) or not isinstance(cmd.get("cmd"), str):
                raise ValueError('a command is an object with "cmd"')
        except (ValueError, UnicodeDecodeError) as e:
            self.emit({"event": "command_error", "cmd": None, "detail": str(e)})
            return
        name = cmd["cmd"]
        try:
            done = self.command(name, cmd)
        except (ValueError, TypeError, KeyError) as e:
            self.emit({"event": "command_error", "cmd": name, "detail": str(e)})
            return
        if done is not None:
            ok = {"event": "command_ok", "cmd": name}
            ok.update(done)
            self.emit(ok)

    def command(self, name, cmd):
        if name in ("deny", "ignore"):
            count = cmd.get("count", 1)
            if not isinstance(count, int) or count < 0:
                raise ValueError("count is a non-negative integer")
            if name == "deny":
                self.deny_left = count
            else:
                self.ignore_left = count
            return {"count": count}
        if name == "drop":
            if self.conn is None:
                raise ValueError("no device is connected")
            self.disconnect("centre", "drop command")
            return {}
        if name == "clock_sync":
            text = cmd.get("time")
            tag = time_of(self.clock()) if text is None else time_bytes(text)
            if not time_valid(tag):
                raise ValueError(f"time {text!r} is not a valid date")
            serial = self.control("clock_sync", bytes([90, 1]) + tag)
            return {"serial": serial, "time": time_text(tag)}
        if name == "duty_check":
            minutes = cmd.get("timeout_minutes")
            if not isinstance(minutes, int) or not 0 <= minutes <= 255:
                raise ValueError("timeout_minutes is an integer 0..255")
            serial = self.control("duty_check", bytes([91, 1, minutes]))
            now = time.monotonic()
            self.duty = {"serial": serial, "timeout_minutes": minutes, "sent_at": now,
                         "deadline": now + minutes * 60}
            return {"serial": serial, "timeout_minutes": minutes}
        if name == "quit":
            self.stop("quit command")
            return None
        raise ValueError(f"unknown command {name!r}")

    def control(self, what, unit):
        if self.conn is None:
            raise ValueError("no device is connected")
        destination = self.device if self.device is not None else self.peer_address
        if destination is None:
            raise ValueError("the device's address is unknown: give --device, or wait for "
                             "its first frame")
        self.serial = (self.serial + 1) & 0xFFFF
        serial = self.serial
        raw = encode_frame(serial, self.version, time_of(self.clock()), self.address,
                           destination, 1, unit)
        self.pending[serial] = {"to": what, "unit": unit, "destination": destination,
                                "tries_left": self.retries,
                                "deadline": time.monotonic() + self.answer_timeout}
        self.send(raw, what)
        return serial

    def stop(self, why):
        if self.running:
            self.running = False
            self.emit({"event": "stopped", "why": why})


_print_lock = threading.Lock()


def print_event(event):
    line = json.dumps(event, ensure_ascii=False)
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


# --- explaining a frame (for the golden README and for debugging) -----------------------------

FIELD_NAMES = {"system_type": "系统类型", "system_address": "系统地址",
               "component_type": "部件类型", "component_address": "部件地址",
               "state": "状态", "description": "说明", "analog_type": "模拟量类型",
               "value": "模拟量值", "operation": "操作信息", "operator": "操作员编号",
               "timeout_minutes": "查岗应答时限", "time": "时间", "major": "主版本号",
               "minor": "次版本号"}


def explain(raw):
    """Rows (offset, hex bytes, field, meaning) for a well-formed frame."""
    rows = []

    def row(off, n, field, meaning):
        rows.append((off, raw[off:off + n].hex(" "), field, meaning))

    h = header_fields(raw)
    row(0, 2, "启动符 start", "`@@`")
    row(2, 2, "业务流水号 serial", f"{h['serial']}, low byte first")
    row(4, 1, "主版本号 major version", str(raw[4]))
    row(5, 1, "用户版本号 user version", str(raw[5]))
    row(6, 6, "时间标签 time", f"{h['time'].replace('T', ' ')} (s, min, h, day, month, "
        "year-2000)")
    row(12, 6, "源地址 source", f"{h['source']}, low byte first")
    row(18, 6, "目的地址 destination", f"{h['destination']}, low byte first")
    row(24, 2, "应用数据单元长度 length", f"{h['length']} bytes of application data")
    row(26, 1, "命令字节 command", f"{h['command']}: {COMMANDS.get(h['command'], '?')}")
    end = HEADER_LEN + min(h["length"], max(0, len(raw) - HEADER_LEN - 3))
    if h["length"]:
        t = raw[27]
        spec = TYPES.get(t)
        row(27, 1, "类型标志 type", f"{t}: {spec['name'] if spec else 'unknown'}")
        row(28, 1, "信息对象数目 objects", str(raw[28]))
        pos = 29
        if spec is None:
            row(pos, end - pos, "body", "not decoded")
        else:
            for i in range(raw[28]):
                pre = f"[{i + 1}] " if raw[28] > 1 else ""
                for name, kind in spec["fields"]:
                    if kind == "lstr":
                        n = raw[pos]
                        row(pos, 1, f"{pre}{name} length", str(n))
                        pos += 1
                        row(pos, n, f"{pre}{name}", raw[pos:pos + n].decode("gb18030", "replace"))
                        pos += n
                        continue
                    size = SIZES[kind]
                    b = raw[pos:pos + size]
                    label = f"{pre}{FIELD_NAMES.get(name, '')} {name}".strip()
                    row(pos, size, label, field_meaning(spec, name, kind, b, raw, pos))
                    pos += size
                if spec["tag"]:
                    row(pos, 6, f"{pre}时间标签 time", time_text(raw[pos:pos + 6]).replace("T", " "))
                    pos += 6
    total = sum(raw[2:end])
    if raw[end] == total & 0xFF:
        meaning = (f"0x{raw[end]:02x}: sum of offsets 2..{end - 1} = {total} (0x{total:x}), "
                   "low 8 bits")
    else:
        meaning = (f"0x{raw[end]:02x}, WRONG: offsets 2..{end - 1} sum to {total} (0x{total:x}), "
                   f"so the checksum is 0x{total & 0xFF:02x}")
    row(end, 1, "校验和 checksum", meaning)
    row(end + 1, 2, "结束符 end", "`##`")
    return rows


def field_meaning(spec, name, kind, b, raw, pos):
    if kind == "desc31":
        text = b.rstrip(b"\x00 ").decode("gb18030", "replace")
        used = len(b.rstrip(b"\x00 "))
        return f"GB18030 \"{text}\" ({used} bytes), then {31 - used} NUL bytes"
    if kind == "time":
        return time_text(b).replace("T", " ")
    v = struct.unpack(PACK[kind], b)[0]
    if name == "system_type":
        return f"{v}: {SYSTEM_TYPES.get(v, '')}".rstrip(": ")
    if name == "component_type":
        return f"{v}: {COMPONENT_TYPES.get(v, '')}".rstrip(": ")
    if name == "analog_type":
        return f"{v}: {ANALOG_TYPES[v][0]}" if v in ANALOG_TYPES else str(v)
    if name == "value":
        a = ANALOG_TYPES.get(raw[pos - 1])
        if a:
            scaled = round(v * a[1], 2)
            return f"{v} (signed, low byte first) × {a[1]} = {scaled} {a[2]}"
        return f"{v} (signed, low byte first)"
    if name in ("component_address",):
        return f"{v}, low byte first"
    if "bits" in spec and spec["bits"][0] == name:
        _, names, zero, width = spec["bits"]
        return f"0x{v:0{width // 4}x}: {', '.join(bit_names(v, names, zero, width))}"
    if name == "state":
        return f"0x{v:04x}, low byte first (not interpreted here)"
    if name == "timeout_minutes":
        return f"answer within {v} minutes"
    return str(v)


def explain_markdown(raw):
    lines = ["| offset | bytes | field | meaning |", "|---|---|---|---|"]
    for off, hx, field, meaning in explain(raw):
        lines.append(f"| {off} | `{hx}` | {field} | {meaning} |")
    return "\n".join(lines)


def hex_lines(raw):
    """The .hex form: one line per field, as in the README's table."""
    try:
        rows = explain(raw)
        if sum(len(r[1].replace(" ", "")) for r in rows) // 2 == len(raw):
            return "\n".join(r[1] for r in rows) + "\n"
    except (IndexError, KeyError, struct.error):
        pass
    return raw.hex(" ") + "\n"


def read_hex(path):
    with open(path, encoding="ascii") as f:
        return bytes.fromhex("".join(f.read().split()))


# --- golden frames ----------------------------------------------------------------------------

DEVICE = 112233445566
CENTRE = 1


def header(serial, t, command, source=DEVICE, destination=CENTRE):
    return {"serial": serial, "version": [1, 0], "time": t, "source": source,
            "destination": destination, "command": command}


def golden_frames():
    """The golden frames as their decoded form, written out by hand (bit names included) so
    that --make-golden checks the encoder and decoder against them."""
    g = OrderedDict()
    g["fire_smoke"] = dict(header(1, "2026-12-02T15:04:05", 2), unit={"type": 2, "objects": [{
        "system_type": 1, "system_address": 1, "component_type": 42, "component_address": 3,
        "state": 0x0003, "state_bits": ["running", "fire"], "description": "A栋2层烟感",
        "time": "2026-12-02T15:04:05"}]})
    g["fire_smoke_confirm"] = dict(header(1, "2026-12-02T15:04:06", 3, CENTRE, DEVICE),
                                   unit=None)
    g["gas_analog"] = dict(header(2, "2026-12-02T15:10:00", 2), unit={"type": 3, "objects": [{
        "system_type": 1, "system_address": 1, "component_type": 11, "component_address": 5,
        "analog_type": 6, "value": 250, "time": "2026-12-02T15:10:00"}]})
    g["gas_analog_deny"] = dict(header(2, "2026-12-02T15:10:01", 6, CENTRE, DEVICE), unit=None)
    g["operation_confirm"] = dict(header(3, "2026-12-02T15:05:30", 2), unit={
        "type": 4, "objects": [{
            "system_type": 1, "system_address": 1, "operation": 0x20,
            "operation_bits": ["confirm"], "operator": 1, "time": "2026-12-02T15:05:30"}]})
    g["operation_false_alarm"] = dict(header(4, "2026-12-02T15:06:00", 2), unit={
        "type": 4, "objects": [{
            "system_type": 1, "system_address": 1, "operation": 0x08,
            "operation_bits": ["alarm_cleared"], "operator": 1, "time": "2026-12-02T15:06:00"}]})
    g["uitd_state_channel_fault"] = dict(header(5, "2026-12-02T15:20:00", 2), unit={
        "type": 21, "objects": [{
            "state": 0x21, "state_bits": ["normal", "channel_fault"],
            "time": "2026-12-02T15:20:00"}]})
    g["system_state"] = dict(header(6, "2026-12-02T15:30:00", 2), unit={"type": 1, "objects": [{
        "system_type": 1, "system_address": 1, "state": 0x0001, "time": "2026-12-02T15:30:00"}]})
    g["uitd_time"] = dict(header(7, "2026-12-02T15:40:00", 2), unit={
        "type": 28, "objects": [{"time": "2026-12-02T15:40:00"}]})
    g["clock_sync"] = dict(header(1, "2026-12-02T16:00:00", 1, CENTRE, DEVICE), unit={
        "type": 90, "objects": [{"time": "2026-12-02T16:00:00"}]})
    g["clock_sync_confirm"] = dict(header(1, "2026-12-02T16:00:00", 3), unit=None)
    g["duty_check"] = dict(header(2, "2026-12-02T16:01:00", 1, CENTRE, DEVICE), unit={
        "type": 91, "objects": [{"timeout_minutes": 10}]})
    g["duty_check_confirm"] = dict(header(2, "2026-12-02T16:01:00", 3), unit=None)
    g["duty_check_answer"] = dict(header(8, "2026-12-02T16:03:00", 2), unit={
        "type": 24, "objects": [{
            "operation": 0x20, "operation_bits": ["duty_check_answer"], "operator": 7,
            "time": "2026-12-02T16:03:00"}]})
    return g


CORRUPT = {"corrupt_checksum": ("fire_smoke", "checksum")}


def make_golden(directory):
    os.makedirs(directory, exist_ok=True)
    frames = golden_frames()
    for name, d in frames.items():
        raw = frame_from_json(d)
        back, problems = decode_frame(raw)
        if back != d or problems:
            raise SystemExit(f"{name}: decodes to {back} with {problems}, written as {d}")
        with open(os.path.join(directory, name + ".hex"), "w", encoding="ascii") as f:
            f.write(hex_lines(raw))
        with open(os.path.join(directory, name + ".json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(d, ensure_ascii=False, indent=2) + "\n")
    for name, (base, reason) in CORRUPT.items():
        raw = bytearray(frame_from_json(frames[base]))
        raw[-3] = (raw[-3] + 1) & 0xFF
        with open(os.path.join(directory, name + ".hex"), "w", encoding="ascii") as f:
            f.write(hex_lines(bytes(raw)))
        with open(os.path.join(directory, name + ".json"), "w", encoding="utf-8") as f:
            f.write(json.dumps({"error": reason}) + "\n")
    print(f"wrote {len(frames) + len(CORRUPT)} golden frames to {directory}")


# --- self-test --------------------------------------------------------------------------------

class Failures:
    def __init__(self):
        self.failed = []
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"FAIL: {what}", file=sys.stderr)
        return ok


def golden_test(directory, f):
    names = sorted(n[:-4] for n in os.listdir(directory) if n.endswith(".hex"))
    f.check(len(names) >= 12, f"at least 12 golden frames in {directory} (found {len(names)})")
    for name in names:
        raw = read_hex(os.path.join(directory, name + ".hex"))
        with open(os.path.join(directory, name + ".json"), encoding="utf-8") as fh:
            want = json.load(fh)
        if "error" in want:
            try:
                decode_frame(raw)
                f.check(False, f"{name}: refused ({want['error']})")
            except FrameError as e:
                f.check(e.reason == want["error"], f"{name}: refused for {want['error']}, "
                        f"not {e.reason} ({e.detail})")
            continue
        try:
            got, problems = decode_frame(raw)
        except FrameError as e:
            f.check(False, f"{name}: decodes ({e})")
            continue
        f.check(got == want, f"{name}: decodes to its .json\n  got  {got}\n  want {want}")
        f.check(not problems, f"{name}: no problems ({problems})")
        f.check(frame_from_json(want) == raw, f"{name}: its .json encodes to its .hex")


class TestDevice:
    """A tiny device, for the loopback session only."""

    def __init__(self, port, address=DEVICE, centre=CENTRE):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        self.address = address
        self.centre = centre
        self.splitter = Splitter()
        self.frames = []

    def frame(self, serial, command, unit, t="2026-12-02T15:04:05", destination=None,
              source=None):
        return encode_frame(serial, [1, 0], time_bytes(t),
                            self.address if source is None else source,
                            self.centre if destination is None else destination, command,
                            encode_unit(unit) if isinstance(unit, dict) else unit or b"")

    def send(self, raw):
        self.sock.sendall(raw)

    def recv(self, timeout=2.0, anyone=False):
        """The next frame from the centre, decoded (None if none came in time)."""
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not data:
                return "eof"
            for item in self.splitter.feed(data):
                if item[0] != "frame":
                    raise AssertionError(f"the centre sent a bad frame: {item}")
                self.frames.append(item[1])
        raw = self.frames.pop(0)
        frame, problems = decode_frame(raw, FROM_CENTRE, None if anyone else self.address,
                                       self.centre)
        assert not problems, problems
        return frame

    def close(self):
        self.sock.close()


class Events:
    def __init__(self):
        self.q = queue.Queue()
        self.all = []

    def __call__(self, event):
        # Through JSON, as a driver would see them.
        self.q.put(json.loads(json.dumps(event, ensure_ascii=False)))

    def wait(self, pred, timeout=2.0):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                e = self.q.get(timeout=left)
            except queue.Empty:
                return None
            self.all.append(e)
            if pred(e):
                return e

    def drain(self, settle=0.05):
        out = []
        while True:
            try:
                e = self.q.get(timeout=settle)
            except queue.Empty:
                return out
            self.all.append(e)
            out.append(e)


def ev(name, **fields):
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


def smoke_unit(description="A栋2层烟感", t="2026-12-02T15:04:05", state=3):
    return {"type": 2, "objects": [{
        "system_type": 1, "system_address": 1, "component_type": 42, "component_address": 3,
        "state": state, "description": description, "time": t}]}


def op_unit(operation, operator=1):
    return {"type": 4, "objects": [{"system_type": 1, "system_address": 1,
                                    "operation": operation, "operator": operator,
                                    "time": "2026-12-02T15:05:30"}]}


def loopback_test(f):
    fixed = datetime.datetime(2026, 12, 2, 16, 0, 0)
    events = Events()
    centre = Centre("127.0.0.1", 0, CENTRE, DEVICE, emit=events, clock=lambda: fixed,
                    answer_timeout=0.3, retries=1, partial_timeout=0.2)
    rfd, wfd = os.pipe()
    thread = threading.Thread(target=centre.run, args=(rfd,), daemon=True)
    thread.start()

    def cmd(obj, expect=None):
        os.write(wfd, (json.dumps(obj) + "\n").encode())
        return events.wait(ev("command_ok", cmd=obj["cmd"]) if expect is None else ev(expect))

    port = centre.port
    f.check(events.wait(ev("listening", port=port)) is not None, "listening event")
    dev = TestDevice(port)
    f.check(events.wait(ev("connected")) is not None, "connected event")

    # 1. confirm
    dev.send(dev.frame(1, 2, smoke_unit()))
    e = events.wait(ev("frame", serial=1))
    f.check(e is not None and e["duplicate"] is False and e["unit"]["objects"][0]["state_bits"]
            == ["running", "fire"] and e["unit"]["objects"][0]["description"] == "A栋2层烟感",
            f"fire frame reported: {e}")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 3 and a["serial"] == 1 and a["unit"] is None
            and a["source"] == CENTRE and a["destination"] == DEVICE
            and a["time"] == "2026-12-02T16:00:00", f"confirm of serial 1: {a}")
    f.check(events.wait(ev("sent", command=3, serial=1)) is not None, "sent confirm event")

    # 2. deny, then the retransmission is a duplicate and confirmed
    cmd({"cmd": "deny", "count": 1})
    gas = dev.frame(2, 2, {"type": 3, "objects": [{
        "system_type": 1, "system_address": 1, "component_type": 11, "component_address": 5,
        "analog_type": 6, "value": 250, "time": "2026-12-02T15:10:00"}]})
    dev.send(gas)
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 6 and a["serial"] == 2, f"deny: {a}")
    dev.send(gas)
    e = events.wait(ev("frame", serial=2, duplicate=True))
    f.check(e is not None and e["unit"]["objects"][0]["value"] == 250,
            "denied frame sent again: duplicate")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 3 and a["serial"] == 2,
            f"retransmission confirmed: {a}")
    f.check(not [x for x in events.drain() if x["event"] == "problem"],
            "an identical retransmission is no problem")

    # 3. ignore, retransmission with other content
    cmd({"cmd": "ignore", "count": 1})
    dev.send(dev.frame(3, 2, op_unit(0x20)))
    f.check(events.wait(ev("ignored", serial=3)) is not None, "ignored event")
    f.check(dev.recv(0.3) is None, "an ignored frame gets no answer")
    dev.send(dev.frame(3, 2, op_unit(0x20, operator=2), t="2026-12-02T15:04:15"))
    f.check(events.wait(ev("frame", serial=3, duplicate=True)) is not None,
            "retransmission after silence: duplicate")
    f.check(events.wait(ev("problem", what="retransmission_differs", serial=3)) is not None,
            "a retransmission with other content is a problem")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 3 and a["serial"] == 3, "confirmed after all")

    # 4. a serial gap
    dev.send(dev.frame(5, 2, op_unit(0x08)))
    p = events.wait(ev("problem", what="serial"))
    f.check(p is not None and p["expected"] == 4 and p["serial"] == 5, f"serial gap: {p}")
    f.check(isinstance(dev.recv(), dict), "gap frame still confirmed")

    # 5. bad checksum: denied, then the good copy is new (no duplicate, no gap)
    good = dev.frame(6, 2, smoke_unit(state=1))
    bad = bytearray(good)
    bad[-3] ^= 0x55
    dev.send(bytes(bad))
    e = events.wait(ev("bad_frame", reason="checksum"))
    f.check(e is not None and e["serial"] == 6, f"bad checksum reported: {e}")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 6 and a["serial"] == 6, f"bad denied: {a}")
    dev.send(good)
    e = events.wait(ev("frame", serial=6))
    f.check(e is not None and e["duplicate"] is False, "good copy after a bad one is new")
    f.check(isinstance(dev.recv(), dict), "good copy confirmed")

    # 6. garbage before a frame, a frame split across writes
    raw = dev.frame(7, 2, smoke_unit())
    dev.send(b"xyz" + raw[:10])
    time.sleep(0.02)
    dev.send(raw[10:])
    f.check(events.wait(ev("bad_frame", reason="start", raw=b"xyz".hex())) is not None,
            "garbage reported as start")
    f.check(events.wait(ev("frame", serial=7)) is not None, "frame after garbage decoded")
    f.check(isinstance(dev.recv(), dict), "and confirmed")

    # 7. wrong destination; wrong source; bad version; unknown command
    for serial, reason, frame in [
            (8, "destination", dev.frame(8, 2, smoke_unit(), destination=99)),
            (8, "version", bytes_patch(dev.frame(8, 2, smoke_unit()), 4, 2)),
            (8, "command", bytes_patch(dev.frame(8, 9, smoke_unit()), 26, 9)),
            (8, "command", dev.frame(8, 1, smoke_unit()))]:
        dev.send(frame)
        e = events.wait(ev("bad_frame", reason=reason))
        f.check(e is not None and e["serial"] == serial, f"{reason} refused: {e}")
        a = dev.recv()
        f.check(isinstance(a, dict) and a["command"] == 6, f"{reason} denied: {a}")
    dev.send(dev.frame(8, 2, smoke_unit(), source=777))
    f.check(events.wait(ev("bad_frame", reason="source")) is not None, "source refused")
    a = dev.recv(anyone=True)
    f.check(isinstance(a, dict) and a["command"] == 6 and a["destination"] == 777,
            f"source denied, to the sender: {a}")

    # 8. object count that does not match the length
    unit = bytearray(encode_unit(smoke_unit()))
    unit[1] = 2
    dev.send(dev.frame(8, 2, bytes(unit)))
    f.check(events.wait(ev("problem", what="object_count", serial=8)) is not None,
            "count mismatch is a problem")
    f.check(events.wait(ev("bad_frame", reason="unit")) is not None, "and the unit is refused")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 6, "and denied")

    # 9. unknown type, invalid time tag, invalid GB18030: confirmed, with problems
    dev.send(dev.frame(8, 2, bytes([200, 1, 0xAB, 0xCD])))
    e = events.wait(ev("frame", serial=8))
    f.check(e is not None and e["unit"] == {"type": 200, "body": "01abcd"},
            f"unknown type kept as body: {e and e['unit']}")
    f.check(events.wait(ev("problem", what="unknown_type")) is not None, "unknown type problem")
    f.check(isinstance(dev.recv(), dict), "unknown type confirmed")
    dev.send(dev.frame(9, 2, smoke_unit(t="2026-13-02T15:04:05")))
    f.check(events.wait(ev("problem", what="time_tag", serial=9)) is not None, "month 13")
    f.check(isinstance(dev.recv(), dict), "confirmed")
    u = bytearray(encode_unit(smoke_unit()))
    u[2 + 9] = 0xFF  # first description byte
    u[2 + 10] = 0xFF
    dev.send(dev.frame(10, 2, bytes(u)))
    f.check(events.wait(ev("problem", what="description", serial=10)) is not None,
            "invalid GB18030")
    f.check(isinstance(dev.recv(), dict), "confirmed")

    # 10. clock sync: confirmed
    cmd({"cmd": "clock_sync", "time": "2026-12-02T16:00:00"})
    c = dev.recv()
    f.check(isinstance(c, dict) and c["command"] == 1 and c["serial"] == 1 and c["unit"] == {
        "type": 90, "objects": [{"time": "2026-12-02T16:00:00"}]}, f"clock sync: {c}")
    dev.send(dev.frame(1, 3, None))
    e = events.wait(ev("answer", to="clock_sync"))
    f.check(e is not None and e["command"] == 3 and e["serial"] == 1, f"answer: {e}")
    # denied: the centre sends it again (same serial), then gives up
    cmd({"cmd": "clock_sync", "time": "2026-12-02T16:00:30"})
    c = dev.recv()
    f.check(isinstance(c, dict) and c["serial"] == 2, "second clock sync, serial 2")
    dev.send(dev.frame(2, 6, None))
    e = events.wait(ev("answer", to="clock_sync", command=6))
    f.check(e is not None, "deny of the clock sync reported")
    c2 = dev.recv()
    f.check(isinstance(c2, dict) and c2["serial"] == 2 and c2["unit"] == c["unit"],
            "clock sync sent again after the deny")
    f.check(events.wait(ev("control_failed", serial=2), timeout=1.0) is not None,
            "given up after the retries")

    # 11. duty check: confirm, then the operator's answer
    cmd({"cmd": "duty_check", "timeout_minutes": 10})
    c = dev.recv()
    f.check(isinstance(c, dict) and c["command"] == 1 and c["serial"] == 3 and c["unit"] == {
        "type": 91, "objects": [{"timeout_minutes": 10}]}, f"duty check: {c}")
    dev.send(dev.frame(3, 3, None))
    f.check(events.wait(ev("answer", to="duty_check", command=3)) is not None, "confirmed")
    dev.send(dev.frame(11, 2, {"type": 24, "objects": [{
        "operation": 0x20, "operator": 7, "time": "2026-12-02T16:03:00"}]}))
    e = events.wait(ev("frame", serial=11))
    f.check(e is not None and e["unit"]["objects"][0]["operation_bits"] == ["duty_check_answer"],
            "duty answer frame")
    e = events.wait(ev("duty_check_answered"))
    f.check(e is not None and e["operator"] == 7 and e["within_timeout"] and e["serial"] == 3,
            f"duty check answered: {e}")
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 3 and a["serial"] == 11, "answer confirmed")
    cmd({"cmd": "clock_sync"})
    c = dev.recv()
    f.check(isinstance(c, dict) and c["serial"] == 4 and c["unit"]["objects"][0]["time"]
            == "2026-12-02T16:00:00", f"clock sync without a time: the centre's clock: {c}")
    dev.send(dev.frame(99, 3, None))
    f.check(events.wait(ev("problem", what="unsolicited_answer")) is not None,
            "confirm of nothing")
    dev.send(dev.frame(4, 3, None))
    f.check(events.wait(ev("answer", to="clock_sync", serial=4)) is not None, "confirmed")

    # 12. a truncated frame, reported once nothing more comes
    dev.send(dev.frame(12, 2, smoke_unit())[:40])
    e = events.wait(ev("bad_frame", reason="length"), timeout=1.0)
    f.check(e is not None and e["serial"] == 12, f"truncated frame: {e}")
    f.check(isinstance(dev.recv(), dict), "truncated frame denied")

    # 13. drop; reconnect; serials go on across connections
    f.check(cmd({"cmd": "drop"}, "disconnected") is not None, "dropped")
    f.check(events.wait(ev("command_ok", cmd="drop")) is not None, "drop command_ok")
    f.check(dev.recv() == "eof", "the device sees the connection closed")
    dev.close()
    dev = TestDevice(port)
    f.check(events.wait(ev("connected")) is not None, "reconnected")
    dev.send(dev.frame(12, 2, smoke_unit()))
    e = events.wait(ev("frame", serial=12))
    f.check(e is not None and not e["duplicate"], "first frame after reconnecting")
    f.check(isinstance(dev.recv(), dict), "confirmed")
    f.check(not [x for x in events.drain() if x["event"] == "problem"], "no serial problem")
    # a second connection replaces the first
    dev2 = TestDevice(port)
    f.check(events.wait(ev("disconnected", by="centre")) is not None, "old connection closed")
    f.check(events.wait(ev("connected")) is not None, "new connection")
    f.check(dev.recv() == "eof", "old connection sees its end")
    dev.close()
    dev2.send(dev2.frame(12, 2, smoke_unit()))
    f.check(events.wait(ev("frame", serial=12, duplicate=True)) is not None,
            "retransmission on the new connection is a duplicate")
    dev2.close()
    f.check(events.wait(ev("disconnected", by="device")) is not None, "device hung up")

    # 14. bad commands, quit
    os.write(wfd, b"not json\n")
    f.check(events.wait(ev("command_error")) is not None, "bad command line")
    cmd({"cmd": "quit"}, "stopped")
    thread.join(2)
    f.check(not thread.is_alive(), "quit ends the centre")
    os.close(wfd)
    os.close(rfd)

    # 15. a restart on the same port (SO_REUSEADDR, after the centre closed connections)
    events2 = Events()
    again = Centre("127.0.0.1", port, CENTRE, None, emit=events2)
    rfd, wfd = os.pipe()
    thread = threading.Thread(target=again.run, args=(rfd,), daemon=True)
    thread.start()
    dev = TestDevice(port)
    f.check(events2.wait(ev("connected")) is not None, "restart on the same port")
    dev.send(dev.frame(14, 2, smoke_unit()))
    a = dev.recv()
    f.check(isinstance(a, dict) and a["command"] == 3, "without --device, any source")
    os.close(wfd)  # end of stdin
    f.check(events2.wait(ev("stopped")) is not None, "stdin EOF stops it")
    thread.join(2)
    dev.close()
    os.close(rfd)
    if f.failed:
        print("events seen:", file=sys.stderr)
        for e in events.all + events2.all:
            print("  " + json.dumps(e, ensure_ascii=False), file=sys.stderr)


def bytes_patch(raw, offset, value):
    """raw with one byte changed and the checksum made right again."""
    b = bytearray(raw)
    b[offset] = value
    b[-3] = checksum(b[:-3])
    return bytes(b)


def cli_test(f):
    """The program itself: the listening line, a frame, stdin EOF."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--listen", "127.0.0.1:0",
                          "--address", str(CENTRE), "--device", str(DEVICE)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         encoding="utf-8")
    try:
        first = json.loads(p.stdout.readline())
        f.check(first["event"] == "listening" and first["port"] > 0, f"CLI listening: {first}")
        dev = TestDevice(first["port"])
        dev.send(dev.frame(1, 2, smoke_unit()))
        a = dev.recv()
        f.check(isinstance(a, dict) and a["command"] == 3, "CLI confirms")
        lines = [json.loads(p.stdout.readline()) for _ in range(3)]
        f.check([x["event"] for x in lines] == ["connected", "frame", "sent"],
                f"CLI events: {lines}")
        f.check(lines[1]["unit"]["objects"][0]["description"] == "A栋2层烟感",
                "CLI prints UTF-8 JSON")
        p.stdin.close()
        rest = [json.loads(x) for x in p.stdout.read().splitlines()]
        f.check(p.wait(3) == 0, "CLI exits 0 on stdin EOF")
        f.check(rest and rest[-1]["event"] == "stopped", f"CLI stopped event: {rest}")
        dev.close()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def self_test(directory):
    started = time.monotonic()
    f = Failures()
    golden_test(directory, f)
    loopback_test(f)
    cli_test(f)
    took = time.monotonic() - started
    status = "ok" if not f.failed else f"{len(f.failed)} FAILED"
    print(f"gb26875 self-test: {f.passed} checks passed, {status} ({took:.2f} s)")
    return 0 if not f.failed else 1


# --- main -------------------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", help="HOST:PORT (PORT 0: any free port)")
    ap.add_argument("--address", type=int, help="the centre's address (6 bytes)")
    ap.add_argument("--device", type=int, help="accept frames from this source address only")
    ap.add_argument("--answer-timeout", type=float, default=10.0,
                    help="seconds to wait for the device's confirm of a control frame (10)")
    ap.add_argument("--retries", type=int, default=3,
                    help="retransmissions of an unconfirmed or denied control frame (3)")
    ap.add_argument("--partial-timeout", type=float, default=2.0,
                    help="seconds after which an unfinished frame is reported (2)")
    ap.add_argument("--user-version", type=int, default=0, help="user version byte sent (0)")
    ap.add_argument("--self-test", metavar="DIR")
    ap.add_argument("--make-golden", metavar="DIR")
    ap.add_argument("--explain", metavar="FILE")
    args = ap.parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(encoding="utf-8")
    if args.self_test:
        return self_test(args.self_test)
    if args.make_golden:
        make_golden(args.make_golden)
        return 0
    if args.explain:
        raw = read_hex(args.explain)
        try:
            decode_frame(raw)
        except FrameError as e:
            print(f"refused: {e}")
        try:
            print(explain_markdown(raw))
        except (IndexError, KeyError, struct.error, UnicodeError):
            print("not laid out like a frame: " + raw.hex(" "))
        return 0
    if not args.listen or args.address is None:
        ap.error("--listen and --address are required")
    for name in ("address", "device"):
        v = getattr(args, name)
        if v is not None and not 0 <= v < 1 << 48:
            ap.error(f"--{name} is a 6-byte address: 0 .. {(1 << 48) - 1}")
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    centre = Centre(host, int(port), args.address, args.device,
                    answer_timeout=args.answer_timeout, retries=args.retries,
                    partial_timeout=args.partial_timeout, user_version=args.user_version)
    try:
        centre.run(sys.stdin.fileno())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
