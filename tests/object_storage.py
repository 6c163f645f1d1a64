"""A real local S3 server for clipstore's tests (moto's, in a thread of the test process). No tests live here;
the session fixture `s3` in tests/conftest.py starts one server and one bucket for the whole session.

The server listens on 127.0.0.1 only, on a free port, and is shut down at the end of the session. moto accepts
any credentials: tests of refused credentials are not possible against it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

ACCESS_KEY = "clipstore-test-key"
SECRET_KEY = "clipstore-test-secret"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """A running S3 server with one bucket: its endpoint URL, the bucket's name, and how to reach it."""

    endpoint: str
    bucket: str

    @property
    def storage_options(self) -> dict[str, str]:
        """LanceDB storage options for this server (what `clipstore.connect(..., storage_options=)` takes)."""
        return {
            "aws_endpoint": self.endpoint,
            "aws_access_key_id": ACCESS_KEY,
            "aws_secret_access_key": SECRET_KEY,
            "aws_region": REGION,
            "allow_http": "true",
        }

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment variables Lance reads, pointing at this server."""
        return {
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
            "AWS_ALLOW_HTTP": "true",
        }

    def uri(self, name: str = "store") -> str:
        """A fresh, empty prefix in the bucket: s3://<bucket>/<name>-<random>."""
        return f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:8]}"

    def keys(self, uri: str) -> list[str]:
        """Every object key under `uri` (relative to it), sorted: what the store wrote to the bucket."""
        import boto3

        prefix = uri.split("/", 3)[3] + "/"
        client = boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
        )
        keys = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            keys += [item["Key"][len(prefix):] for item in page.get("Contents", [])]
        return sorted(keys)


def start_server():
    """Start moto's S3 server on 127.0.0.1 (a free port) with one bucket: (server, S3Server). Stop it with
    `server.stop()`."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3Server(f"http://{host}:{port}", "clipstore-tests")
    client = boto3.client(
        "s3", endpoint_url=s3.endpoint, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION
    )
    client.create_bucket(Bucket=s3.bucket)
    return server, s3


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
