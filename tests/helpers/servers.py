"""Real servers on loopback for the reader's tests and bench: an HTTP file server with latency and
failures, and moto's S3 server. Each is a context manager that stops what it started."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing-key-id", "AWS_SECRET_ACCESS_KEY": "s3cr3t-of-the-loopback-s3",
          "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass(frozen=True)
class S3Bucket:
    endpoint: str
    client: object  # boto3 S3 client
    name: str


@dataclass
class HTTPLog:
    """What the HTTP server saw: requests per path, bytes sent, the most requests in flight at once."""
    requests: dict = field(default_factory=dict)
    ranges: list = field(default_factory=list)   # (path, Range header or None)
    bytes_sent: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def http_server(root: Path, latency_s: float = 0.0, fail_once: dict | None = None, fail_always: dict | None = None):
    """Serve files under `root` on 127.0.0.1 (GET with Range). `fail_once` {path: status}: the
    first request of that path gets the status; `fail_always` {path: status}: every request does.
    Each response waits `latency_s` first. Yields (base URL, HTTPLog)."""
    log = HTTPLog()
    once, always = dict(fail_once or {}), dict(fail_always or {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            path = unquote(urlsplit(self.path).path)
            with log.lock:
                log.requests[path] = log.requests.get(path, 0) + 1
                log.ranges.append((path, self.headers.get("Range")))
                log.in_flight += 1
                log.max_in_flight = max(log.max_in_flight, log.in_flight)
                first = log.requests[path] == 1
            try:
                time.sleep(latency_s)
                status = always.get(path) or (once.get(path) if first else None)
                if status:
                    return self._send(status, b"")
                f = root / path.lstrip("/")
                if not f.is_file():
                    return self._send(404, b"")
                data = f.read_bytes()
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start, end = int(a), (int(b) + 1 if b else len(data))
                    return self._send(206, data[start:end], {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"})
                return self._send(200, data)
            finally:
                with log.lock:
                    log.in_flight -= 1

        def _send(self, status, body, headers=None):
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            with log.lock:
                log.bytes_sent += len(body)

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the listen backlog (socketserver's 5 drops a burst of connects: 1 s SYN retries)

        def handle_error(self, request, client_address):  # a client that gave up (timeout): not an error here
            pass

    server = Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def s3_server(buckets=("data",)):
    """moto's S3 server on 127.0.0.1 with `buckets` created; sets the AWS_* variables (test
    credentials, AWS_ENDPOINT_URL) in os.environ for the test's duration. Yields (endpoint, boto3
    client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"])
        for b in buckets:
            client.create_bucket(Bucket=b)
        yield endpoint, client
    finally:
        _restore(saved)
        server.stop()


def upload_tree(client, bucket: str, root: Path, prefix: str = "") -> int:
    """Put every file under `root` into `bucket` at prefix + its relative path; returns the count."""
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=prefix + p.relative_to(root).as_posix(), Body=p.read_bytes())
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    """`python -m tests.helpers.servers ROOT LATENCY_S`: the HTTP server as its own process (the
    bench keeps its CPU apart); prints the base URL, serves until stdin closes."""
    import sys

    root, latency = (argv or sys.argv[1:])[:2]
    with http_server(Path(root), float(latency)) as (url, _):
        print(url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()


@contextlib.contextmanager
def gcs_server(bucket: str = "gdata"):
    """gcp-storage-emulator's GCS server on 127.0.0.1 (in memory) with `bucket`; sets
    STORAGE_EMULATOR_HOST (gcsfs reads it) for the test. Yields a gcsfs filesystem on it."""
    from gcp_storage_emulator.server import create_server

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    server.start()
    # gcsfs's gRPC probe of a bucket's type waits 60 s on an emulator: off (it reads this on import)
    env = {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import gcsfs

        yield gcsfs.GCSFileSystem(token="anon")
    finally:
        _restore(saved)
        server.stop()


AZURITE = Path(__file__).resolve().parents[2] / "build" / "tools" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"  # Azurite's well-known development account and key
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@contextlib.contextmanager
def azurite_server(tmp: Path):
    """Azurite's Blob service (npm, installed by `make setup`) on 127.0.0.1, storing under `tmp`;
    sets AZURE_STORAGE_CONNECTION_STRING (adlfs reads it) for the test. Yields an adlfs filesystem."""
    import subprocess

    port = free_port()
    proc = subprocess.Popen([str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(tmp),
                             "--silent", "--skipApiVersionCheck", "--loose"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conn = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};")
    saved = {"AZURE_STORAGE_CONNECTION_STRING": os.environ.get("AZURE_STORAGE_CONNECTION_STRING")}
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"azurite exited with {proc.returncode}")
                time.sleep(0.05)
        import adlfs

        yield adlfs.AzureBlobFileSystem(connection_string=conn)
    finally:
        _restore(saved)
        proc.terminate()
        proc.wait(10)


def _restore(saved: dict) -> None:
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
