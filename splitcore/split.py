"""The streaming split: the Job's path from a checkpoint to three component files.

It never builds a model: for each component in turn it reads just that component's tensors
from the checkpoint (page-cache backed, see `checkpoint`) and streams them to an atomic file,
so peak memory follows the largest component, not the model.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from splitcore.checkpoint import Checkpoint, resolve_checkpoint_dir
from splitcore.models import check_model_type
from splitcore.plan import SplitPlan
from splitcore.progress import Progress
from splitcore.storage import (
    COMPONENTS,
    FORMATS,
    Component,
    SaveReport,
    StagedFile,
    StorageError,
    StorageManager,
    TensorSummary,
    build_metadata,
    check_format,
    commit_component,
    resolve_model_name,
    stage_component,
)


@dataclass(frozen=True)
class ComponentResult:
    """One component as reported to the caller (and, through the Job, to the operator)."""

    name: Component
    path: str | None
    metadata_path: str | None
    model_class: str
    start_layer: int
    end_layer: int
    num_layers: int
    num_parameters: int
    memory_bytes: int
    sha256: str | None
    saved_at: str
    dtype: str

    @classmethod
    def from_metadata(
        cls, metadata: dict[str, Any], path: Path | None, metadata_path: Path | None
    ) -> ComponentResult:
        return cls(
            name=metadata["component"],
            path=str(path) if path else None,
            metadata_path=str(metadata_path) if metadata_path else None,
            model_class=metadata["model_class"],
            start_layer=metadata["start_layer"],
            end_layer=metadata["end_layer"],
            num_layers=metadata["num_layers"],
            num_parameters=metadata["num_parameters"],
            memory_bytes=metadata["memory_bytes"],
            sha256=metadata["sha256"],
            saved_at=metadata["saved_at"],
            dtype=metadata["dtype"],
        )


@dataclass(frozen=True)
class SplitResult:
    """What a split produced; its compact JSON is the Job's termination message."""

    model_name: str
    model_type: str
    split_config: str
    storage_path: str
    format: str
    saved: bool
    num_layers: int
    components: list[ComponentResult] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = camel(asdict(self))
        return document


def camel(value: Any) -> Any:
    if isinstance(value, dict):
        return {_camel_key(key): camel(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel(item) for item in value]
    return value


def _camel_key(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.capitalize() for part in rest)


def remove_stale_temp_files(storage_path: str | Path, model_name: str, split_config: str) -> None:
    """Remove temp files a killed writer of these very components left behind (never others)."""
    for component in COMPONENTS:
        for file_format in FORMATS:
            final = StorageManager.get_split_model_path(
                storage_path, model_name, component, split_config, file_format
            )
            for name in (final.name, StorageManager.get_model_metadata_path(final).name):
                for stale in final.parent.glob(f".{name}.*.tmp"):
                    stale.unlink(missing_ok=True)


def _commit(
    staged: StagedFile,
    path: Path,
    metadata: dict[str, Any],
    report: SaveReport,
    failed: threading.Event,
) -> ComponentResult:
    """Commit one component unless an earlier step failed (then leave nothing behind)."""
    if failed.is_set():
        staged.abort()
        raise RuntimeError("an earlier component failed")
    try:
        metadata = commit_component(staged, path, metadata)
    except BaseException:
        failed.set()
        raise
    report.saved(metadata["component"], path)
    return ComponentResult.from_metadata(
        metadata, path, StorageManager.get_model_metadata_path(path)
    )


def check_storage_writable(storage_path: str | Path) -> None:
    """Fail before any work if the storage folder cannot be created or written."""
    base = Path(storage_path)
    try:
        StorageManager.create_storage_directories(base)
    except OSError as error:
        raise StorageError(f"storage path {base} cannot be created: {error.strerror}") from error
    for component in COMPONENTS:
        if not os.access(base / component, os.W_OK | os.X_OK):
            raise StorageError(f"storage path {base / component} is not writable")


def split_checkpoint(
    model_name_or_path: str,
    model_type: str,
    split_point_1: int,
    split_point_2: int,
    storage_path: str | Path,
    *,
    model_name: str | None = None,
    file_format: str = "pt",
    save: bool = True,
    allow_pickle: bool = False,
    out: IO[str] | None = None,
    progress: Progress | None = None,
) -> SplitResult:
    """Split a checkpoint into component files without building the model.

    With `save=False` nothing is written: the result describes the components (layers,
    parameters, bytes) as a plan.
    """
    check_model_type(model_type)
    check_format(file_format)
    name = resolve_model_name(model_name, model_name_or_path)
    checkpoint = Checkpoint.open(
        resolve_checkpoint_dir(model_name_or_path, allow_pickle), allow_pickle
    )
    plan = SplitPlan.build(model_type, checkpoint, split_point_1, split_point_2)
    if save:
        check_storage_writable(storage_path)
        remove_stale_temp_files(storage_path, name, plan.split_config)
        report = SaveReport(storage_path, out)
    results: list[ComponentResult] = []
    # Commits (fsync, rename, metadata) run in order on a second thread while the next
    # component is being written: the disk flushes one file as the next one streams.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit") as committer:
        pending: list[Future[ComponentResult]] = []
        failed = threading.Event()
        try:
            for component in COMPONENTS:
                if failed.is_set():
                    break  # a commit failed: its error is raised below
                names = plan.tensors[component]
                source_tensors = checkpoint.read(set(names.values()))
                tensors = {canonical: source_tensors[source] for canonical, source in names.items()}
                start, end = plan.layer_range(component)
                metadata = build_metadata(
                    model_class=plan.adapter.class_name(component),
                    component=component,
                    start_layer=start,
                    end_layer=end,
                    summary=TensorSummary.of(tensors),
                    config=plan.config,
                    model_type=plan.model_type,
                    split_config=plan.split_config,
                    source=str(model_name_or_path),
                    file_format=file_format,
                )
                if not save:
                    results.append(ComponentResult.from_metadata(metadata, None, None))
                    continue
                path = StorageManager.get_split_model_path(
                    storage_path, name, component, plan.split_config, file_format
                )
                summary = TensorSummary.of(tensors)
                if progress is not None:
                    progress.component(component, len(tensors), summary.memory_bytes)
                staged = stage_component(
                    tensors, path, metadata, progress.tensor if progress else None
                )
                if progress is not None:
                    progress.component_done()
                pending.append(committer.submit(_commit, staged, path, metadata, report, failed))
                del source_tensors, tensors
        except BaseException:
            failed.set()
            for future in pending:  # let queued commits abort; the first error is ours
                with contextlib.suppress(BaseException):
                    future.result()
            raise
        results += [future.result() for future in pending]
    if save:
        report.done()
    return SplitResult(
        model_name=name,
        model_type=plan.model_type,
        split_config=plan.split_config,
        storage_path=str(storage_path),
        format=file_format,
        saved=save,
        num_layers=plan.num_layers,
        components=results,
    )
