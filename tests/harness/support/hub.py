"""A small Hugging Face hub on 127.0.0.1 that the real `huggingface_hub` client talks to.

It serves the routes a download takes (see `huggingface_hub.hf_api.HfApi.model_info` and
`huggingface_hub.file_download.get_hf_file_metadata` / `http_get`):

- `GET /api/models/{repo_id}[/revision/{revision}]?blobs=true`: the commit sha and every
  file's size, git blob id and LFS sha256;
- `HEAD /{repo_id}/resolve/{revision}/{path}`: `X-Repo-Commit`, `ETag` (the LFS sha256, or the
  git blob id of a file kept in git), `X-Linked-Etag` and `X-Linked-Size` for LFS files;
- `GET` of the same URL, with `Range: bytes=N-` answered by 206.

Errors carry the hub's `X-Error-Code` / `X-Error-Message` headers, which the client turns into
its exceptions. Files named `*.safetensors` or `*.bin` are LFS files, the others live in git.
Every request is recorded, so a test can say exactly what was fetched; `outage` makes every
answer an error.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")
INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def flipped(data: bytes) -> bytes:
    """`data` with its middle byte inverted: one corrupted byte."""
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class HubRepo:
    files: dict[str, bytes]
    corrupted: set[str] = field(default_factory=set)  # served with a flipped byte

    @property
    def commit(self) -> str:
        digest = hashlib.sha1()
        for path in sorted(self.files):
            digest.update(f"{path}\0{git_blob_id(self.files[path])}\n".encode())
        return digest.hexdigest()

    def etag(self, path: str) -> str:
        content = self.files[path]
        return hashlib.sha256(content).hexdigest() if is_lfs(path) else git_blob_id(content)

    def served(self, path: str) -> bytes:
        content = self.files[path]
        return flipped(content) if path in self.corrupted else content

    def sibling(self, path: str) -> dict[str, Any]:
        content = self.files[path]
        document: dict[str, Any] = {
            "rfilename": path,
            "size": len(content),
            "blobId": git_blob_id(content),
        }
        if is_lfs(path):
            document["lfs"] = {
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "pointerSize": 134,
            }
        return document


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubServer:
    """`with HubServer({"owner/name": HubRepo(...)}, token="hf_x") as hub: hub.url ...`"""

    def __init__(self, repos: dict[str, HubRepo], token: str | None = None) -> None:
        self.repos = repos
        self.token = token
        self.requests: list[Request] = []
        self.outage: tuple[int, str] | None = None  # (status, message) for every request
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def file_requests(self) -> list[tuple[str, str]]:
        """(method, file path) of every request for a file's bytes or metadata."""
        found = []
        for request in self.requests:
            parts = request.path.split("/")
            if len(parts) > 5 and parts[3] == "resolve":
                found.append((request.method, "/".join(parts[5:])))
        return found

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads `hub.requests` instead."""

        def do_GET(self) -> None:
            self._answer(send_body=True)

        def do_HEAD(self) -> None:
            self._answer(send_body=False)

        def _answer(self, send_body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.requests.append(
                Request(
                    self.command,
                    path,
                    self.headers.get("Range"),
                    self.headers.get("Authorization"),
                )
            )
            parts = path.strip("/").split("/")
            if hub.outage is not None:
                status, message = hub.outage
                self._error(status, {"X-Error-Message": message}, send_body)
            elif parts[:2] == ["api", "models"] and len(parts) >= 4:
                revision = parts[5] if len(parts) >= 6 and parts[4] == "revision" else "main"
                self._model_info("/".join(parts[2:4]), revision, send_body)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._file("/".join(parts[:2]), parts[3], "/".join(parts[4:]), send_body)
            else:
                self._error(404, {"X-Error-Message": "no such route"}, send_body)

        def _repo(self, repo_id: str, revision: str, send_body: bool) -> HubRepo | None:
            """The repository, if the caller may read it at `revision`; else an error sent."""
            if hub.token is not None:
                given = self.headers.get("Authorization")
                if given is None:
                    self._error(401, {"X-Error-Code": "RepoNotFound"}, send_body)
                    return None
                if given != f"Bearer {hub.token}":
                    self._error(401, {"X-Error-Message": INVALID_CREDENTIALS}, send_body)
                    return None
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, {"X-Error-Code": "RepoNotFound"}, send_body)
                return None
            if revision not in ("main", repo.commit):
                self._error(404, {"X-Error-Code": "RevisionNotFound"}, send_body)
                return None
            return repo

        def _model_info(self, repo_id: str, revision: str, send_body: bool) -> None:
            repo = self._repo(repo_id, revision, send_body)
            if repo is None:
                return
            document = {
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit,
                "private": hub.token is not None,
                "siblings": [repo.sibling(path) for path in sorted(repo.files)],
            }
            body = json.dumps(document).encode()
            self._send(200, {"Content-Type": "application/json"}, body, send_body)

        def _file(self, repo_id: str, revision: str, path: str, send_body: bool) -> None:
            repo = self._repo(repo_id, revision, send_body)
            if repo is None:
                return
            if path not in repo.files:
                headers = {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit}
                self._error(404, headers, send_body)
                return
            content = repo.served(path)
            headers = {
                "X-Repo-Commit": repo.commit,
                "ETag": f'"{repo.etag(path)}"',
                "Accept-Ranges": "bytes",
            }
            if is_lfs(path):
                headers["X-Linked-Etag"] = f'"{repo.etag(path)}"'
                headers["X-Linked-Size"] = str(len(content))
            start = _range_start(self.headers.get("Range"))
            if start is None:
                self._send(200, headers, content, send_body)
            elif start >= len(content):
                headers["Content-Range"] = f"bytes */{len(content)}"
                self._send(416, headers, b"", send_body)
            else:
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
                self._send(206, headers, content[start:], send_body)

        def _error(self, status: int, headers: dict[str, str], send_body: bool) -> None:
            body = json.dumps({"error": headers.get("X-Error-Message", "error")}).encode()
            self._send(status, {"Content-Type": "application/json", **headers}, body, send_body)

        def _send(self, status: int, headers: dict[str, str], body: bytes, send: bool) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if send:
                self.wfile.write(body)

    return Handler


def _range_start(header: str | None) -> int | None:
    """The N of `bytes=N-` (the only form the client sends), or None."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes=") : -1])
