#!/usr/bin/env python3
"""Send a few frames to a running Fleet Server in both dialects and print what it answers (seed 000).

    python tools/test_client.py [--host 127.0.0.1] [--port 5221] [--imei 860000000000042]

1. The seed's text dialect on one connection: ``~A`` position, ``~T``/``~X`` CAN frames, ``~E`` event;
   each answered with ``~AACK,<IMEI>~`` etc.
2. Binary NTCB/FLEX as real trackers speak it on another: handshake ``*>S``, negotiation ``*>FLEX``
   (FLEX 2.0), an ``~A`` array of three records, an ``~T`` alarm, an ``~C`` current state and a ``0x7F``
   ping (which gets no answer).
Exit status 0 when every frame got the expected answer.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fleet.protocol.navtelecom import (
    ack_archive,
    ack_current,
    ack_event,
    archive,
    build_record,
    current,
    event,
    flex_negotiation,
    handshake,
    layout_for_fields,
    ping,
)

FIELDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 29, 37, 45, 69, 70, 71)


def exchange(sock: socket.socket, data: bytes, expected: bytes | None, label: str) -> bool:
    """Send one frame, read the reply (exactly as long as the expected one), print both."""
    sock.sendall(data)
    shown = data if len(data) <= 48 else data[:48] + b"..."
    print(f"→ {label:<22} {shown!r}")
    if expected is None:
        sock.settimeout(0.5)
        try:
            reply = sock.recv(64)
        except TimeoutError:
            print("← (no answer, as expected)")
            return True
        print(f"← unexpected answer {reply!r}")
        return False
    reply = b""
    sock.settimeout(10)
    while len(reply) < len(expected):
        chunk = sock.recv(len(expected) - len(reply))
        if not chunk:
            break
        reply += chunk
    ok = reply == expected
    textual = reply.endswith(b"~") and all(0x20 <= byte < 0x7F for byte in reply)
    shown_reply = reply.decode() if textual else reply.hex(" ")
    print(f"← {shown_reply:<40} {'ok' if ok else 'EXPECTED ' + expected.hex(' ')}")
    return ok


def ntcb_reply(sock: socket.socket, label: str, packet: bytes, body: bytes) -> bool:
    """Send an NTCB packet and check the body of its NTCB answer."""
    sock.sendall(packet)
    print(f"→ {label:<22} {packet!r}")
    sock.settimeout(10)
    header = b""
    while len(header) < 16:
        chunk = sock.recv(16 - len(header))
        if not chunk:
            print("← connection closed")
            return False
        header += chunk
    length = header[12] | header[13] << 8
    answer = b""
    while len(answer) < length:
        answer += sock.recv(length - len(answer))
    ok = answer == body
    print(f"← {(header + answer).hex(' ')}  body {answer!r} {'ok' if ok else 'EXPECTED ' + repr(body)}")
    return ok


def text_dialect(host: str, port: int, imei: str) -> bool:
    print(f"\n== text dialect (seed 000), IMEI {imei}")
    now = int(time.time())
    frames = [
        (f"~A{imei},{now},55.751244,37.618423,42.5,180,9,0.9~", f"~AACK,{imei}~", "~A position"),
        (f"~T{imei},7E8,04,41,0C,1A,F8,00,00,00~", f"~TACK,{imei}~", "~T CAN (OBD-II rpm)"),
        (f"~X{imei},0CF00400,FF,FF,FF,68,13,FF,FF,FF~", f"~XACK,{imei}~", "~X CAN (J1939 EEC1)"),
        (f"~E{imei},1,{now},ignition on~", f"~EACK,{imei}~", "~E event"),
    ]
    with socket.create_connection((host, port), timeout=10) as sock:
        return all(exchange(sock, frame.encode(), ack.encode(), label) for frame, ack, label in frames)


def binary_dialect(host: str, port: int, imei: str) -> bool:
    print(f"\n== NTCB/FLEX 2.0, IMEI {imei}")
    layout = layout_for_fields(FIELDS)
    now = int(time.time())

    def rec(index: int, event_code: int = 0x1250) -> bytes:
        return build_record(
            layout,
            index=index,
            event_code=event_code,
            device_time=now - 60 + index,
            fix_time=now - 60 + index,
            valid=True,
            satellites=10,
            latitude=55.7512 + index * 1e-4,
            longitude=37.6184,
            altitude_m=150,
            speed_kmh=36.0,
            course=90,
            power_v=12.6,
            battery_v=4.1,
            hdop=0.8,
            pdop=1.2,
        )

    with socket.create_connection((host, port), timeout=10) as sock:
        results = [
            ntcb_reply(sock, "*>S handshake", handshake(imei), b"*<S"),
            ntcb_reply(
                sock,
                "*>FLEX negotiation",
                flex_negotiation(FIELDS, version=20, bit_count=122),
                b"*<FLEX\xb0\x14\x14",
            ),
            exchange(sock, archive([rec(1), rec(2), rec(3)]), ack_archive(3), "~A 3 records"),
            exchange(sock, event(4, rec(4, event_code=0x1301)), ack_event(4), "~T alarm"),
            exchange(sock, current(rec(0, event_code=0xFF00)), ack_current(), "~C current state"),
            exchange(sock, ping(), None, "0x7F ping"),
        ]
    return all(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5221)
    parser.add_argument("--imei", default="860000000000042", help="15 digits")
    args = parser.parse_args()
    try:
        ok = text_dialect(args.host, args.port, args.imei) & binary_dialect(args.host, args.port, args.imei)
    except OSError as err:
        print(f"error: {args.host}:{args.port}: {err}", file=sys.stderr)
        return 2
    print("\nall answers as expected" if ok else "\nSOME ANSWERS DIFFER")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
