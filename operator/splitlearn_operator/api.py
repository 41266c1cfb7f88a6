"""A small async Kubernetes REST client for what the operator itself reads and writes.

kopf watches and patches the SplitModels it serves; everything else (PVCs, Jobs, Pods,
Events, and status writes that must land *before* a Job starts) goes through this client.
It reuses kopf's credentials: the login handler hands it the same `ConnectionInfo`.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from splitlearn_operator.config import GROUP, PLURAL, VERSION

SERVICE_ACCOUNT_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
RETRIED_STATUSES = {429, 500, 502, 503, 504}
RETRY_BACKOFF = (0.1, 0.3, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        parts = [base]
        if namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


SPLITMODELS = Resource(GROUP, VERSION, PLURAL)
JOBS = Resource("batch", "v1", "jobs")
PODS = Resource("", "v1", "pods")
PVCS = Resource("", "v1", "persistentvolumeclaims")
EVENTS = Resource("", "v1", "events")
DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICES = Resource("", "v1", "services")
CONFIGMAPS = Resource("", "v1", "configmaps")


class ApiError(Exception):
    """A Kubernetes API error with its HTTP status and the server's reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Client:
    """Requests against the API server of the current `kopf.ConnectionInfo`."""

    def __init__(self, request_timeout: float = 60.0) -> None:
        self._connection: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._stale: list[aiohttp.ClientSession] = []
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._files: list[Any] = []

    def set_connection(self, connection: Any) -> None:
        """Called by the login handler: the next request uses these credentials."""
        if connection is not self._connection:
            self._connection = connection
            if self._session is not None:
                self._stale.append(self._session)
            self._session = None

    def _ssl(self) -> ssl.SSLContext | bool:
        info = self._connection
        if info.insecure:
            return False
        context = ssl.create_default_context(cafile=info.ca_path)
        if info.ca_data:
            data = info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data
            context.load_verify_locations(cadata=data)
        certificate = info.certificate_path or self._temp(info.certificate_data)
        key = info.private_key_path or self._temp(info.private_key_data)
        if certificate:
            context.load_cert_chain(certificate, key)
        return context

    def _temp(self, data: str | bytes | None) -> str | None:
        if not data:
            return None
        handle = tempfile.NamedTemporaryFile(suffix=".pem")  # noqa: SIM115 - kept while open
        handle.write(data.encode() if isinstance(data, str) else data)
        handle.flush()
        self._files.append(handle)
        return handle.name

    def _headers(self) -> dict[str, str]:
        info = self._connection
        headers = {"Accept": "application/json"}
        token = info.token
        if SERVICE_ACCOUNT_TOKEN.is_file():  # projected tokens rotate: always the current one
            token = SERVICE_ACCOUNT_TOKEN.read_text().strip()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif info.username:
            auth = aiohttp.BasicAuth(info.username, info.password or "")
            headers["Authorization"] = auth.encode()
        return headers

    async def _session_for_request(self) -> aiohttp.ClientSession:
        if self._connection is None:
            raise ApiError(503, "NotLoggedIn", "no Kubernetes credentials yet")
        while self._stale:
            await self._stale.pop().close()
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=20)
            self._session = aiohttp.ClientSession(
                base_url=str(self._connection.server).rstrip("/") + "/",
                connector=connector,
                timeout=self._timeout,
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        """One call, retried on what a busy or restarting API server answers (429, 5xx, a
        dropped connection) with a short backoff; other errors are raised as `ApiError`."""
        for delay in (*RETRY_BACKOFF, None):
            try:
                return await self._request_once(method, path, params, body, content_type)
            except ApiError as error:
                if delay is None or error.status not in RETRIED_STATUSES:
                    raise
            except (aiohttp.ClientConnectionError, TimeoutError):
                if delay is None:
                    raise
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_once(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None,
        body: Any,
        content_type: str,
    ) -> Any:
        session = await self._session_for_request()
        headers = self._headers()
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        async with session.request(
            method, path.lstrip("/"), params=params, data=data, headers=headers
        ) as response:
            text = await response.text()
            document = json.loads(text) if text else {}
            if response.status >= 400:
                raise ApiError(
                    response.status,
                    str(document.get("reason", response.reason)),
                    str(document.get("message", text))[:1000],
                )
            return document

    async def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", resource.path(namespace, name))
        return result

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        selectors = {"labelSelector": label_selector, "fieldSelector": field_selector}
        params = {key: value for key, value in selectors.items() if value} or None
        result = await self.request("GET", resource.path(namespace), params=params)
        return list(result.get("items", []))

    async def create(
        self, resource: Resource, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("POST", resource.path(namespace), body=body)
        return result

    async def patch(
        self,
        resource: Resource,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """An RFC 7386 merge patch; lists are replaced whole."""
        result: dict[str, Any] = await self.request(
            "PATCH",
            resource.path(namespace, name, subresource),
            body=patch,
            content_type="application/merge-patch+json",
        )
        return result

    async def create_or_patch(
        self, resource: Resource, namespace: str, body: dict[str, Any], patch: dict[str, Any]
    ) -> dict[str, Any]:
        """Create `body`; when it exists, merge-`patch` it instead (no read needed)."""
        try:
            return await self.create(resource, namespace, body)
        except ApiError as error:
            if error.status != 409:
                raise
        return await self.patch(resource, namespace, body["metadata"]["name"], patch)

    async def delete(self, resource: Resource, namespace: str, name: str) -> None:
        """Delete with background propagation (the Job's pods follow); gone is fine."""
        try:
            await self.request(
                "DELETE",
                resource.path(namespace, name),
                body={
                    "kind": "DeleteOptions",
                    "apiVersion": "v1",
                    "propagationPolicy": "Background",
                },
            )
        except ApiError as error:
            if error.status != 404:
                raise

    async def version(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", "/version")
        return result

    async def close(self) -> None:
        for session in [*self._stale, self._session]:
            if session is not None and not session.closed:
                await session.close()
        for handle in self._files:
            handle.close()
        self._files.clear()
