"""A real S3-protocol server on loopback for the tests: moto in server mode.

``s3_store`` starts ``moto.server.ThreadedMotoServer`` on a free 127.0.0.1 port, points
the standard AWS variables at it (``AWS_ENDPOINT_URL``, dummy credentials, a region) and
gives a bucket and a ``pyarrow.fs.S3FileSystem`` client to put and read objects with.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class S3Store:
    url: str
    bucket: str
    fs: Any

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_file(self, local: Any, key: str) -> str:
        with (
            open(local, "rb") as src,
            self.fs.open_output_stream(f"{self.bucket}/{key}", compression=None) as dst,
        ):
            dst.write(src.read())
        return self.uri(key)

    def keys(self, prefix: str = "") -> list[str]:
        import pyarrow.fs as pafs

        sel = pafs.FileSelector(f"{self.bucket}/{prefix}".rstrip("/"), recursive=True,
                                allow_not_found=True)  # fmt: skip
        infos = self.fs.get_file_info(sel)
        return sorted(i.path[len(self.bucket) + 1 :] for i in infos if i.type == pafs.FileType.File)

    def read_table(self, key: str) -> Any:
        import pyarrow.parquet as pq

        return pq.read_table(f"{self.bucket}/{key}", filesystem=self.fs)


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    pytest.importorskip("moto")
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    for k, v in {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(k, v)
    fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http",
                           region="us-east-1", allow_bucket_creation=True)  # fmt: skip
    fs.create_dir("corpora")
    try:
        yield S3Store(url, "corpora", fs)
    finally:
        server.stop()
