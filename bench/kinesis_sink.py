"""A Kinesis endpoint that takes everything at once: the producer benchmark's second endpoint.

``bench_producer.py`` measures events/s against kinesalite and, in the same run, against
this sink, so the report can tell the producer's own ceiling from kinesalite's. It answers
ListShards (``--shards`` open shards splitting the hash range evenly) and PutRecords (every
entry accepted; entries are counted with ``bytes.count``, no JSON parsing, so the sink costs
a core as little as possible); anything else is a 400. HTTP/1.1 keep-alive, one thread
per connection (botocore keeps a pool). Runs in a process of its own:

    .venv/bin/python bench/kinesis_sink.py --port 0 --shards 4    # prints the port
"""
from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HASH_SPACE = 2 ** 128


def list_shards_body(shards: int) -> bytes:
    step = HASH_SPACE // shards
    out = []
    for i in range(shards):
        end = HASH_SPACE - 1 if i == shards - 1 else (i + 1) * step - 1
        out.append({"ShardId": f"shardId-{i:012d}",
                    "HashKeyRange": {"StartingHashKey": str(i * step), "EndingHashKey": str(end)},
                    "SequenceNumberRange": {"StartingSequenceNumber": "1"}})
    return json.dumps({"Shards": out}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed ACK
    shards_body = b""
    entry = b'{"SequenceNumber":"1","ShardId":"shardId-000000000000"}'

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        target = self.headers.get("X-Amz-Target", "")
        if target.endswith(".PutRecords"):
            n = body.count(b'"PartitionKey"')
            out = b'{"FailedRecordCount":0,"Records":[' + b",".join([self.entry] * n) + b"]}"
            self._answer(200, out)
        elif target.endswith(".ListShards"):
            self._answer(200, self.shards_body)
        else:
            self._answer(400, b'{"__type":"UnknownOperationException"}')

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--shards", type=int, default=4)
    args = ap.parse_args()
    Handler.shards_body = list_shards_body(args.shards)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
