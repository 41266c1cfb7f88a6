"""A realism layer over kmock's `KubernetesEmulator`: an in-memory API server kopf can trust.

kmock serves HTTP on 127.0.0.1 and routes requests (resource, namespace, name, action); its
fault-injection DSL still applies (`api[...] << 500` answers before any state changes). The
state itself is kept here, with what a real kube-apiserver does and bare kmock does not:

* metadata filled in on create: namespace, uid, creationTimestamp, resourceVersion,
  generation, `generateName`; 409 on a duplicate name;
* a global resourceVersion; 409 on a stale one in a patch or update; 422 on a failed
  JSON-patch `test`; RFC 7386 merge patches and RFC 6902 JSON patches;
* `generation` bumped on spec changes only; `/status` separated from the main resource;
* finalizers and deletionTimestamp; ownerReference garbage collection (background);
* label and field selectors; list `resourceVersion`;
* watches that subscribe before they snapshot, resume from a resourceVersion without
  replaying, never duplicate an event, and end after `timeoutSeconds`;
* custom objects validated, defaulted and pruned against the CRD's openAPIV3Schema, with its
  CEL rules (cel-python), as an apiserver does;
* `v1/namespaces` and `v1/events` served, so kopf watches and posts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import yaml
from kmock import KubernetesEmulator, KubernetesError, ResourceInfo, resource
from kmock._internal import enums, parsing, rendering

Key = tuple[resource, str | None, str]
CRDS = resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")


@attrs.define
class Authorizer:
    """RBAC as the apiserver applies it, for requests that carry `token`: Role rules in their
    namespace, ClusterRole rules everywhere; discovery is always allowed."""

    token: str
    role_rules: list[dict[str, Any]] = attrs.field(factory=list)
    role_namespace: str | None = None
    cluster_rules: list[dict[str, Any]] = attrs.field(factory=list)
    denied: list[str] = attrs.field(factory=list)

    @staticmethod
    def verb(request: rendering.Request) -> str:
        if request.action == enums.action.WATCH:
            return "watch"
        if request.method == "GET":
            return "get" if request.name else "list"
        return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
            str(getattr(request.method, "value", request.method)), "unknown"
        )

    @staticmethod
    def _allows(rules: list[dict[str, Any]], group: str, plural: str, verb: str) -> bool:
        return any(
            group in rule.get("apiGroups", []) and plural in rule.get("resources", [])
            and verb in rule.get("verbs", [])
            for rule in rules
        )  # fmt: skip

    def check(self, request: rendering.Request) -> None:
        auth = request.headers.get("Authorization", "")
        if request.resource is None or not request.resource.plural:
            return  # discovery is open to every authenticated client
        if auth != f"Bearer {self.token}":
            return  # a request of the test itself (an administrator)
        group = request.resource.group or ""
        plural = request.resource.plural or ""
        if request.subresource:
            plural = f"{plural}/{request.subresource}"
        verb = self.verb(request)
        allowed = self._allows(self.cluster_rules, group, plural, verb) or (
            request.namespace is not None
            and request.namespace == self.role_namespace
            and self._allows(self.role_rules, group, plural, verb)
        )
        if not allowed:
            where = f"in namespace {request.namespace}" if request.namespace else "cluster-wide"
            message = f'cannot {verb} resource "{plural}" in API group "{group}" {where}'
            self.denied.append(message)
            raise KubernetesError(status=403, reason="Forbidden", message=message)


def go_regexp(pattern: str) -> str:
    """The apiserver matches `pattern` with Go's RE2, where `$` is the end of the text; in
    Python `$` also matches before a final newline, which `\\Z` does not."""
    return re.sub(r"(?<!\\)\$", r"\\Z", pattern)


@attrs.define
class ApiFault:
    """An injected API failure: the next `times` matching calls get `status`, or, with
    `hang`, never get an answer until `release()` (a process killed mid-call)."""

    status: int = 500
    method: str | None = None  # e.g. "PATCH"
    plural: str | None = None  # e.g. "splitmodels"
    subresource: str | None = "*"  # "*": any, None: only the main resource
    times: int = 1
    hang: bool = False
    when: Callable[[rendering.Request], bool] | None = None
    fired: int = 0
    released: asyncio.Event = attrs.field(factory=asyncio.Event)

    def release(self) -> None:
        self.times = 0
        self.released.set()

    @property
    def reason(self) -> str:
        return {
            409: "Conflict",
            429: "TooManyRequests",
            500: "InternalError",
            503: "ServiceUnavailable",
        }.get(self.status, "Error")

    def matches(self, request: rendering.Request) -> bool:
        return (
            (self.method is None or request.method == self.method)
            and (
                self.plural is None or (request.resource and request.resource.plural == self.plural)
            )
            and (self.subresource == "*" or request.subresource == self.subresource)
        )


_NAMESPACES_PATH = re.compile(r"^/api/v1/namespaces(?:/([^/]+)(?:/(status|finalize))?)?/?$")

CORE_RESOURCES: dict[str, tuple[str, bool, set[str]]] = {
    # plural (group/version/plural): kind, namespaced, subresources
    "v1/namespaces": ("Namespace", False, {"status"}),
    "v1/events": ("Event", True, set()),
    "v1/pods": ("Pod", True, {"status", "log"}),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True, {"status"}),
    "v1/configmaps": ("ConfigMap", True, set()),
    "v1/secrets": ("Secret", True, set()),
    "v1/services": ("Service", True, {"status"}),
    "v1/serviceaccounts": ("ServiceAccount", True, set()),
    "apps/v1/deployments": ("Deployment", True, {"status", "scale"}),
    "batch/v1/jobs": ("Job", True, {"status"}),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False, set()),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False, set()),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True, set()),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True, set()),
    "apiextensions.k8s.io/v1/customresourcedefinitions": (
        "CustomResourceDefinition",
        False,
        {"status"},
    ),
}


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conflict(message: str) -> KubernetesError:
    return KubernetesError(status=409, reason="Conflict", message=message)


def invalid(kind: str, name: str, causes: list[str]) -> KubernetesError:
    return KubernetesError(
        status=422,
        reason="Invalid",
        message=f'{kind} "{name}" is invalid: ' + "; ".join(causes),
        details={"causes": [{"message": cause} for cause in causes]},
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge, null deletes, everything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def json_patch(document: Any, operations: list[dict[str, Any]], kind: str, name: str) -> Any:
    """RFC 6902 with add, remove, replace and test; a failed test is a 422, as in k8s."""
    result = copy.deepcopy(document)
    for operation in operations:
        parts = _pointer(operation["path"])
        parent = result
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        leaf = parts[-1] if parts else None
        op = operation["op"]
        if op == "test":
            actual: Any = result
            try:
                for part in parts:
                    actual = actual[int(part)] if isinstance(actual, list) else actual[part]
            except (KeyError, IndexError):
                actual = None
            if actual != operation.get("value"):
                raise invalid(kind, name, [f"the test of {operation['path']} failed"])
        elif op in ("add", "replace"):
            if isinstance(parent, list):
                index = len(parent) if leaf == "-" else int(leaf)  # type: ignore[arg-type]
                if op == "add":
                    parent.insert(index, operation["value"])
                else:
                    parent[index] = operation["value"]
            elif leaf is None:
                result = copy.deepcopy(operation["value"])
            else:
                parent[leaf] = copy.deepcopy(operation["value"])
        elif op == "remove":
            if isinstance(parent, list):
                parent.pop(int(leaf))  # type: ignore[arg-type]
            else:
                parent.pop(leaf, None)
        else:
            raise invalid(kind, name, [f"unsupported JSON-patch op {op!r}"])
    return result


# ------------------------------------------------------------------------------ selectors

_SET_SELECTOR = re.compile(r"^\s*([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current] if part.strip()]


def matches_labels(labels: dict[str, str], selector: str | None) -> bool:
    """Equality-based (`a=b`, `a!=b`), set-based (`a in (x,y)`) and existence (`a`, `!a`)."""
    for term in _split_selector(selector or ""):
        if (found := _SET_SELECTOR.match(term)) is not None:
            key, operator, values = found.groups()
            options = {value.strip() for value in values.split(",")}
            if (labels.get(key) in options) != (operator == "in") or (
                operator == "in" and key not in labels
            ):
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def matches_fields(obj: dict[str, Any], selector: str | None) -> bool:
    for term in _split_selector(selector or ""):
        negate = "!=" in term
        path, value = term.split("!=" if negate else "=", 1)
        actual: Any = obj
        for part in path.strip().split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if (str(actual) == value.strip()) == negate:
            return False
    return True


# ------------------------------------------------------------------------------ schemas


def _cel_program(rule: str) -> Any:
    import celpy
    from celpy import celtypes

    def split(text: Any, separator: Any) -> Any:  # the Kubernetes strings library's split
        return celtypes.ListType([celtypes.StringType(p) for p in str(text).split(str(separator))])

    environment = celpy.Environment()
    return environment.program(environment.compile(rule), functions={"split": split})


class Schema:
    """An openAPIV3Schema applied as an apiserver applies it: prune, default, validate."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._programs: dict[str, Any] = {}

    def apply(self, obj: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        errors: list[str] = []
        metadata = obj.get("metadata")
        body = {k: v for k, v in obj.items() if k != "metadata"}
        result = self._walk(body, self.schema, "", errors)
        if metadata is not None:
            result["metadata"] = metadata
        return result, errors

    def _cel(self, value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> None:
        import celpy

        for rule in schema.get("x-kubernetes-validations", []):
            program = self._programs.get(rule["rule"]) or _cel_program(rule["rule"])
            self._programs[rule["rule"]] = program
            try:
                ok = program.evaluate({"self": celpy.json_to_cel(value)})
            except Exception as error:  # CEL runtime errors reject, as in k8s
                ok = False
                rule = {**rule, "message": f"{rule.get('message', rule['rule'])} ({error})"}
            if ok is not True and not (hasattr(ok, "__bool__") and bool(ok) is True):
                errors.append(
                    f"{path or '<root>'}: Invalid value: {rule.get('message', rule['rule'])}"
                )

    def _walk(self, value: Any, schema: dict[str, Any], path: str, errors: list[str]) -> Any:
        if value is None and schema.get("nullable"):
            return None
        if schema.get("x-kubernetes-int-or-string"):
            if not isinstance(value, int | str) or isinstance(value, bool):
                errors.append(f"{path}: Invalid value: must be an integer or a string")
            return value
        kind = schema.get("type")
        checks: dict[str, Callable[[Any], bool]] = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
        }
        if kind and not checks[kind](value):
            errors.append(
                f"{path}: Invalid value: {json.dumps(value)}: {path} in body must be of type {kind}"
            )
            return value
        if "enum" in schema and value not in schema["enum"]:
            supported = ", ".join(json.dumps(v) for v in schema["enum"])
            errors.append(
                f"{path}: Unsupported value: {json.dumps(value)}: supported values: {supported}"
            )
        if kind == "string":
            if "pattern" in schema and not re.search(go_regexp(schema["pattern"]), value):
                errors.append(
                    f"{path}: Invalid value: {json.dumps(value)}: {path} in body should match "
                    f"'{schema['pattern']}'"
                )
            if len(value) > schema.get("maxLength", len(value)):
                errors.append(f"{path}: Too long: may not be longer than {schema['maxLength']}")
            if len(value) < schema.get("minLength", 0):
                errors.append(
                    f"{path}: Invalid value: should be at least {schema['minLength']} chars"
                )
        if kind == "object":
            value = self._object(value, schema, path, errors)
        if kind == "array":
            value = [
                self._walk(item, schema.get("items", {}), f"{path}[{index}]", errors)
                for index, item in enumerate(value)
            ]
        self._cel(value, schema, path, errors)
        return value

    def _object(
        self, value: dict[str, Any], schema: dict[str, Any], path: str, errors: list[str]
    ) -> dict[str, Any]:
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        result: dict[str, Any] = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            if key in properties:
                result[key] = self._walk(item, properties[key], child, errors)
            elif isinstance(additional, dict):
                result[key] = self._walk(item, additional, child, errors)
            elif preserve or additional is True:
                result[key] = item
            # else: pruned, silently, as a structural schema prunes
        for key, child_schema in properties.items():
            if key not in result and "default" in child_schema:
                result[key] = copy.deepcopy(child_schema["default"])
        for key in schema.get("required", []):
            if key not in result:
                errors.append(f"{path + '.' if path else ''}{key}: Required value")
        return result


# ------------------------------------------------------------------------------ the server


@attrs.define(kw_only=True)
class RealisticKubernetes(KubernetesEmulator):
    store: dict[Key, dict[str, Any]] = attrs.field(factory=dict, init=False)
    revision: int = attrs.field(default=0, init=False)
    history: list[tuple[int, resource, dict[str, Any]]] = attrs.field(factory=list, init=False)
    schemas: dict[resource, Schema] = attrs.field(factory=dict, init=False)
    waiters: set[asyncio.Future[None]] = attrs.field(factory=set, init=False)
    faults: list[ApiFault] = attrs.field(factory=list, init=False)
    authorizer: Authorizer | None = attrs.field(default=None, init=False)
    watch_epoch: int = attrs.field(default=0, init=False)  # bump to cut every open watch

    def inject(self, **fault: Any) -> ApiFault:
        """Add a fault (see `ApiFault`); it stays until its `times` are used up."""
        injected = ApiFault(**fault)
        self.faults.append(injected)
        return injected

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for path, (kind, namespaced, subresources) in CORE_RESOURCES.items():
            self.resources[path] = ResourceInfo(
                kind=kind,
                namespaced=namespaced,
                singular=kind.lower(),
                subresources=subresources,
                verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
            )

    # ---- setup helpers used by tests and the kubelet (in-process, no HTTP)

    def install_crd(self, path: Path) -> dict[str, Any]:
        return self.put(CRDS, yaml.safe_load(path.read_text()))

    def _register_crd(self, crd: dict[str, Any]) -> None:
        """Serve a CRD's resource: discovery, its schema, its subresources."""
        names = crd["spec"]["names"]
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        ref = resource(crd["spec"]["group"], version["name"], names["plural"])
        self.resources[ref] = ResourceInfo(
            kind=names["kind"],
            namespaced=crd["spec"]["scope"] == "Namespaced",
            singular=names.get("singular"),
            shortnames=set(names.get("shortNames", [])),
            categories=set(names.get("categories", [])),
            subresources=set(version.get("subresources", {})),
            verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        )
        self.schemas[ref] = Schema(version["schema"]["openAPIV3Schema"])

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        """kmock names the core group's version "/v1"; kubectl needs "v1"."""
        payload = await super()._serve_version(request)
        if isinstance(payload, dict) and payload.get("groupVersion") == "/v1":
            payload["groupVersion"] = "v1"
        return payload

    def kind_of(self, ref: resource) -> str:
        info = self.resources[ref]
        return str(info.kind) if info.kind else ref.plural or "Object"

    def has_status(self, ref: resource) -> bool:
        return "status" in self.resources[ref].subresources

    def put(
        self, ref: resource, obj: dict[str, Any], namespace: str | None = None
    ) -> dict[str, Any]:
        """Create an object directly (as a controller inside the cluster would)."""
        return self._create(ref, namespace or obj.get("metadata", {}).get("namespace"), obj)

    def get(self, ref: resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        found = self.store.get((ref, namespace, name))
        return copy.deepcopy(found) if found else None

    def objects(self, ref: resource, namespace: str | None = None) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (key_ref, key_ns, _), obj in sorted(self.store.items(), key=lambda i: str(i[0]))
            if key_ref == ref and (namespace is None or key_ns == namespace)
        ]

    def write_status(
        self, ref: resource, namespace: str | None, name: str, status: dict[str, Any]
    ) -> None:
        """What the kubelet and controllers do: replace an object's status."""
        key = (ref, namespace, name)
        if key not in self.store:
            return
        obj = copy.deepcopy(self.store[key])
        obj["status"] = status
        self._commit(ref, key, obj, "MODIFIED")

    def remove(self, ref: resource, namespace: str | None, name: str) -> None:
        self._delete(ref, namespace, name, {})

    # ---- state transitions

    def _next_revision(self) -> str:
        self.revision += 1
        return str(self.revision)

    def _emit(self, ref: resource, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.revision, ref, {"type": kind, "object": copy.deepcopy(obj)}))
        self._wake_watchers()

    def _wake_watchers(self) -> None:
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    def _commit(self, ref: resource, key: Key, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = self._next_revision()
        self.store[key] = obj
        self._emit(ref, kind, obj)
        metadata = obj["metadata"]
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            return self._erase(ref, key)
        return copy.deepcopy(obj)

    def _validate(self, ref: resource, obj: dict[str, Any]) -> dict[str, Any]:
        schema = self.schemas.get(ref)
        if schema is None:
            return obj
        result, errors = schema.apply(obj)
        if errors:
            raise invalid(
                f"{self.kind_of(ref)}.{ref.group}", obj["metadata"].get("name", ""), errors
            )
        return result

    def _create(self, ref: resource, namespace: str | None, data: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(data)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name"):
            if not metadata.get("generateName"):
                raise invalid(self.kind_of(ref), "", ["metadata.name: Required value"])
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        info = self.resources[ref]
        if info.namespaced:
            namespace = namespace or metadata.get("namespace") or "default"
            metadata["namespace"] = namespace
        else:
            namespace = None
        key = (ref, namespace, metadata["name"])
        if key in self.store:
            raise KubernetesError(
                status=409,
                reason="AlreadyExists",
                message=f'{ref.plural} "{metadata["name"]}" already exists',
            )
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = now()
        metadata["generation"] = 1
        for field in ("resourceVersion", "deletionTimestamp", "selfLink"):
            metadata.pop(field, None)
        obj.setdefault("apiVersion", f"{ref.group}/{ref.version}" if ref.group else ref.version)
        obj.setdefault("kind", self.kind_of(ref))
        if self.has_status(ref) and ref in self.schemas:
            obj.pop("status", None)  # status is written through /status only
        obj = self._validate(ref, obj)
        if ref == CRDS:
            self._register_crd(obj)
        return self._commit(ref, key, obj, "ADDED")

    def _update(
        self,
        ref: resource,
        namespace: str | None,
        name: str,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        subresource: str | None,
        precondition: str | None,
    ) -> dict[str, Any]:
        key = (ref, namespace, name)
        if key not in self.store:
            raise KubernetesError(
                status=404, reason="NotFound", message=f'{ref.plural} "{name}" not found'
            )
        old = self.store[key]
        if precondition is not None and precondition != old["metadata"]["resourceVersion"]:
            raise conflict(
                f'Operation cannot be fulfilled on {ref.plural} "{name}": the object has been '
                "modified; please apply your changes to the latest version and try again"
            )
        new = change(copy.deepcopy(old))
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if self.has_status(ref):
                new.pop("status", None)
                if "status" in old:
                    new["status"] = old["status"]
            fixed = (
                "uid",
                "creationTimestamp",
                "generation",
                "namespace",
                "name",
                "deletionTimestamp",
            )
            for field in fixed:
                if field in old["metadata"]:
                    new.setdefault("metadata", {})[field] = old["metadata"][field]
        new = self._validate(ref, new)
        if new == old:
            return copy.deepcopy(old)  # a no-op: no new resourceVersion, no event
        content = {k: v for k, v in new.items() if k not in ("metadata", "status")}
        previous = {k: v for k, v in old.items() if k not in ("metadata", "status")}
        if content != previous:
            new["metadata"]["generation"] = int(old["metadata"].get("generation", 1)) + 1
        return self._commit(ref, key, new, "MODIFIED")

    def _delete(
        self, ref: resource, namespace: str | None, name: str, options: dict[str, Any]
    ) -> dict[str, Any]:
        key = (ref, namespace, name)
        if key not in self.store:
            raise KubernetesError(
                status=404, reason="NotFound", message=f'{ref.plural} "{name}" not found'
            )
        obj = copy.deepcopy(self.store[key])
        metadata = obj["metadata"]
        if metadata.get("finalizers"):
            if not metadata.get("deletionTimestamp"):
                metadata["deletionTimestamp"] = now()
                metadata["generation"] = int(metadata.get("generation", 1)) + 1
                return self._commit(ref, key, obj, "MODIFIED")
            return obj
        return self._erase(ref, key, orphan=options.get("propagationPolicy") == "Orphan")

    def _erase(self, ref: resource, key: Key, orphan: bool = False) -> dict[str, Any]:
        obj = self.store.pop(key)
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        self._emit(ref, "DELETED", obj)
        uid = obj["metadata"]["uid"]
        for (child_ref, child_ns, child_name), child in list(self.store.items()):
            owners = child.get("metadata", {}).get("ownerReferences", [])
            if any(owner.get("uid") == uid for owner in owners):
                if orphan:
                    continue
                if (child_ref, child_ns, child_name) in self.store:
                    self._delete(child_ref, child_ns, child_name, {})
        return obj

    # ---- HTTP (kmock's routing calls these unless a test's reaction answers first)

    async def __call__(self, raw_request: Any) -> Any:
        """kmock's path parser reads `/api/v1/namespaces[/name]` as a namespace, not the
        namespaces resource (and answers 500): route those requests here."""
        found = _NAMESPACES_PATH.match(raw_request.path)
        if found is None:
            return await super().__call__(raw_request)
        body = await raw_request.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        name = found.group(1)
        parsed = parsing.ParsedPath("", "v1", "namespaces", None, name, found.group(2))
        request = rendering.Request(
            id=len(self._requests), raw_request=raw_request, url=raw_request.url,
            method=raw_request.method, params=dict(raw_request.query),
            headers=dict(raw_request.headers), data=data, body=body, text=body.decode(),
            action=parsing.guess_k8s(
                parsed, enums.method(raw_request.method), dict(raw_request.query)
            ),
            resource=resource("", "v1", "namespaces"), namespace=None, name=name,
            subresource=found.group(2),
        )  # fmt: skip
        self._requests.append(request)
        try:
            return await self._handle(request)
        except Exception as error:
            return await self._render_error(error)

    async def _handle(self, request: rendering.Request) -> Any:
        """Serve Kubernetes calls directly (kmock's DSL dispatch scans every past request on
        every call: quadratic under load); discovery and anything else go through kmock."""
        if self.authorizer is not None:
            self.authorizer.check(request)
        for fault in self.faults:
            if fault.times > 0 and fault.matches(request):
                fault.times -= 1
                fault.fired += 1
                if fault.hang:
                    await fault.released.wait()
                raise KubernetesError(status=fault.status, reason=fault.reason, message="injected")
        known = request.resource is not None and request.resource in list(self.resources)
        if known and request.action == enums.action.WATCH:
            return await self._stream(request)
        handlers = {
            enums.action.LIST: self._serve_list,
            enums.action.FETCH: self._serve_fetch,
            enums.action.CREATE: self._serve_create,
            enums.action.UPDATE: self._serve_update,
            enums.action.DELETE: self._serve_delete,
        }
        handler = handlers.get(request.action) if request.action else None
        if request.method == "PUT" and request.name:
            handler = self._serve_update
        if known and handler is not None:
            status = 201 if request.action == enums.action.CREATE else 200
            return aiohttp.web.json_response(await handler(request), status=status)
        return await super(KubernetesEmulator, self)._handle(request)

    async def _stream(self, request: rendering.Request) -> Any:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        raw = request._raw_request
        assert raw is not None
        await response.prepare(raw)
        try:
            async for event in self._serve_watch(request):
                if event != b"":
                    await response.write(json.dumps(event).encode() + b"\n")
            await response.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    def _known(self, request: rendering.Request) -> resource:
        ref = request.resource
        if ref is None or ref not in [r for r in self.resources]:
            raise KubernetesError(status=404, reason="NotFound", message=f"unknown resource {ref}")
        return resource(ref.group, ref.version, ref.plural)

    def _select(self, request: rendering.Request, ref: resource) -> list[dict[str, Any]]:
        params = request.params
        return [
            obj
            for (key_ref, key_ns, _), obj in self.store.items()
            if key_ref == ref
            and (request.namespace is None or key_ns == request.namespace)
            and matches_labels(obj["metadata"].get("labels", {}), params.get("labelSelector"))
            and matches_fields(obj, params.get("fieldSelector"))
        ]

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        ref = self._known(request)
        return {
            "apiVersion": f"{ref.group}/{ref.version}" if ref.group else ref.version,
            "kind": f"{self.kind_of(ref)}List",
            "metadata": {"resourceVersion": str(self.revision)},
            "items": copy.deepcopy(self._select(request, ref)),
        }

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        ref = self._known(request)
        params = request.params
        yield b""
        # Subscribe first (remember where the history is), then snapshot: nothing is lost
        # between the two, and nothing is sent twice (events are filtered by resourceVersion).
        epoch = self.watch_epoch
        since = params.get("resourceVersion")
        position = len(self.history)
        if since in (None, "", "0"):
            floor = self.revision
            for obj in copy.deepcopy(self._select(request, ref)):
                yield {"type": "ADDED", "object": obj}
        else:
            floor = int(since)
            position = next(
                (i for i, (rv, _, _) in enumerate(self.history) if rv > floor), len(self.history)
            )
        timeout = float(params.get("timeoutSeconds") or 3600)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and epoch == self.watch_epoch:
            while position < len(self.history):
                revision, event_ref, event = self.history[position]
                position += 1
                obj = event["object"]
                metadata = obj["metadata"]
                if (
                    event_ref == ref
                    and revision > floor
                    and (
                        request.namespace is None or metadata.get("namespace") == request.namespace
                    )
                    and matches_labels(metadata.get("labels", {}), params.get("labelSelector"))
                    and matches_fields(obj, params.get("fieldSelector"))
                ):
                    yield event
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.add(waiter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    waiter, timeout=min(1.0, max(0.01, deadline - time.monotonic()))
                )

    async def _serve_fetch(self, request: rendering.Request) -> rendering.Payload:
        ref = self._known(request)
        found = self.get(ref, request.namespace, str(request.name))
        if found is None:
            raise KubernetesError(
                status=404, reason="NotFound", message=f'{ref.plural} "{request.name}" not found'
            )
        return found

    async def _serve_create(self, request: rendering.Request) -> rendering.Payload:
        ref = self._known(request)
        return self._create(ref, request.namespace, request.data or {})

    async def _serve_update(self, request: rendering.Request) -> rendering.Payload:
        ref = self._known(request)
        data = request.data
        content_type = request.headers.get("Content-Type", "")
        kind = self.kind_of(ref)
        name = str(request.name)
        if request.method == "PUT":
            precondition = (data.get("metadata") or {}).get("resourceVersion")
            return self._update(
                ref, request.namespace, name, lambda old: copy.deepcopy(data),
                request.subresource, precondition,
            )  # fmt: skip
        if "json-patch" in content_type:
            return self._update(
                ref, request.namespace, name,
                lambda old: json_patch(old, data, kind, name), request.subresource, None,
            )  # fmt: skip
        precondition = ((data or {}).get("metadata") or {}).get("resourceVersion")
        patch = copy.deepcopy(data or {})
        patch.get("metadata", {}).pop("resourceVersion", None)
        return self._update(
            ref, request.namespace, name, lambda old: merge_patch(old, patch),
            request.subresource, precondition,
        )  # fmt: skip

    async def _serve_delete(self, request: rendering.Request) -> rendering.Payload:
        ref = self._known(request)
        return self._delete(ref, request.namespace, str(request.name), request.data or {})

    def cut_watches(self) -> None:
        """End every open watch stream mid-stream (a fault: kopf must reconnect)."""
        self.watch_epoch += 1
        self._wake_watchers()
