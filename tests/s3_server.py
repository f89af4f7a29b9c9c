"""A local S3 API on 127.0.0.1 for tests: moto's server in a thread, on an ephemeral port.

moto checks ``If-None-Match`` and stores the object in two steps, so two concurrent conditional PUTs of one key
could both pass the check; real S3 decides them atomically. The app here serialises writes so that the server
gives the same guarantee as S3 does, which is the one the store relies on.

    with S3Server() as s3:                 # s3.env: dummy credentials + AWS_ENDPOINT_URL for clients
        s3.make_bucket("curate")
        Store("s3://curate/store")         # with s3.env in os.environ

Run by hand: ``python -m tests.s3_server`` prints the endpoint and serves until Ctrl-C.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No instance-metadata lookups: the credentials above are all there is.
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Server:
    """moto's S3 on ``127.0.0.1:<free port>``; ``start()`` returns the endpoint URL."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.endpoint = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.requests: list[tuple[str, str]] = []  # (method, path?query) of every request served, in order

    def start(self) -> str:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        app = DomainDispatcherApplication(create_backend_app)
        write_lock = threading.Lock()

        def serialised(environ, start_response):
            query = environ.get("QUERY_STRING")
            self.requests.append((environ["REQUEST_METHOD"], environ["PATH_INFO"] + (f"?{query}" if query else "")))
            if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
                with write_lock:
                    return list(app(environ, start_response))
            return app(environ, start_response)

        self._server = make_server(self.host, self.port, serialised, threaded=True, request_handler=MotoRequestHandler)
        self.port = self._server.server_address[1]
        self.endpoint = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto-s3")
        self._thread.start()
        return self.endpoint

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    @property
    def env(self) -> dict[str, str]:
        """What a client process needs in its environment to reach this server."""
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def __enter__(self) -> S3Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": CREDENTIALS["AWS_DEFAULT_REGION"],
    }


if __name__ == "__main__":
    import time

    with S3Server() as s3:
        print(" ".join(f"{k}={v}" for k, v in s3.env.items()), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
