"""A light Ittybit stand-in for the end-to-end speed part: `POST /jobs` answers a pending
job at once, its id derived from the Idempotency-Key (the same key, the same job, as
Ittybit promises), and nothing is ever delivered back. One asyncio loop, HTTP/1.1
keep-alive, no framework: what it costs per call is small beside either worker's, so the
workers are what is measured. (The emulator, `pipeline emulator`, plays the whole job
life and its webhooks; here it would be a third contender for the two cores.)

    python -m bench.ittybit_stub --port 8123      # prints "listening on <port>", serves
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

_JOB = {"object": "task", "kind": "image", "status": "pending", "progress": 0}


def _answer(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (h.partition(":") for h in lines[1:] if h)
            }
            body = await reader.readexactly(int(headers.get("content-length", 0)))
            if method == "POST" and path == "/jobs":
                key = headers.get("idempotency-key") or hashlib.sha256(body).hexdigest()
                job_id = "task_stub_" + hashlib.sha256(key.encode()).hexdigest()[:16]
                writer.write(_answer("201 Created", json.dumps({"id": job_id, **_JOB}).encode()))
            elif method == "GET" and path == "/healthz":
                writer.write(_answer("200 OK", b"{}"))
            else:
                writer.write(_answer("404 Not Found", b'{"error": "not_found"}'))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def _main(host: str, port: int) -> None:
    server = await asyncio.start_server(_serve, host, port, backlog=256)
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
