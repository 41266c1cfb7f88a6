"""The streaming split: the Job's path from a checkpoint to three component files.

It never builds a model: for each component in turn it reads just that component's tensors
from the checkpoint (page-cache backed, see `checkpoint`) and streams them to an atomic file,
so peak memory follows the largest component, not the model.
"""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

from splitcore.atomic import StagedFile, output_lock
from splitcore.plan import PreparedSplit, prepare_split
from splitcore.progress import Progress
from splitcore.result import ComponentResult, SplitResult
from splitcore.storage import (
    COMPONENTS,
    SaveReport,
    StorageManager,
    TensorSummary,
    build_metadata,
    commit_component,
    output_lock_name,
    remove_stale_temp_files,
    stage_component,
    verified_metadata,
)


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
    source_label: str | None = None,
) -> SplitResult:
    """Split a checkpoint into component files without building the model.

    With `save=False` nothing is written: the result describes the components (layers,
    parameters, bytes) as a plan. `source_label` is what the metadata records as `source`
    (default: the path); a label that names an immutable revision (a fetched hub commit or
    S3 digest) lets a re-run keep files already split from that very revision.
    """
    source = source_label or str(model_name_or_path)
    prepared = prepare_split(
        model_name_or_path, model_type, split_point_1, split_point_2,
        model_name=model_name, file_format=file_format, allow_pickle=allow_pickle,
        storage_path=storage_path if save else None,
    )  # fmt: skip
    name, plan = prepared.model_name, prepared.plan
    reused = False
    if not save:
        components = _write_components(prepared, source, None, file_format)
    else:
        with output_lock(Path(storage_path), output_lock_name(name, plan.split_config)):
            current = (
                _current_components(Path(storage_path), prepared, file_format, source)
                if source_label
                else None
            )
            if current is not None:
                print(f"Up to date: {name} {plan.split_config} from {source}", file=out)
                components, reused = current, True
            else:
                remove_stale_temp_files(storage_path, name, plan.split_config)
                report = SaveReport(storage_path, out)
                components = _write_components(
                    prepared, source, (Path(storage_path), report, progress), file_format
                )
                report.done()
    return SplitResult(
        model_name=name,
        model_type=plan.model_type,
        split_config=plan.split_config,
        storage_path=str(storage_path),
        format=file_format,
        saved=save,
        num_layers=plan.num_layers,
        components=components,
        reused=reused,
    )


def _current_components(
    storage: Path, prepared: PreparedSplit, file_format: str, source: str
) -> tuple[ComponentResult, ...] | None:
    """The three components of this split of this very source, intact (each file's sha256
    is its metadata's), or None when anything must be written."""
    plan, found = prepared.plan, []
    for component in COMPONENTS:
        path = StorageManager.get_split_model_path(
            storage, prepared.model_name, component, plan.split_config, file_format
        )
        try:
            metadata = verified_metadata(path)  # a corrupt file is a ValueError
        except (OSError, ValueError):
            return None
        wanted = (source, plan.model_type, file_format, plan.config)
        if wanted != tuple(metadata.get(k) for k in ("source", "model_type", "format", "config")):
            return None
        metadata_path = StorageManager.get_model_metadata_path(path)
        found.append(ComponentResult.from_metadata(metadata, path, metadata_path))
    return tuple(found)


def _write_components(
    prepared: PreparedSplit,
    source: str,
    target: tuple[Path, SaveReport, Progress | None] | None,
    file_format: str,
) -> tuple[ComponentResult, ...]:
    """Stream each component to its file (`target`: storage, report, progress), or only
    describe it (`target` None)."""
    name, plan, checkpoint = prepared.model_name, prepared.plan, prepared.plan.checkpoint
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
                read = checkpoint.read(set(names.values()))
                tensors = {
                    canonical: read[name_in_source] for canonical, name_in_source in names.items()
                }
                start, end = plan.layer_range(component)
                summary = TensorSummary.of(tensors)
                metadata = build_metadata(
                    model_class=plan.adapter.class_name(component),
                    component=component,
                    start_layer=start,
                    end_layer=end,
                    summary=summary,
                    config=plan.config,
                    model_type=plan.model_type,
                    split_config=plan.split_config,
                    source=source,
                    file_format=file_format,
                )
                if target is None:
                    results.append(ComponentResult.from_metadata(metadata, None, None))
                    continue
                storage, report, progress = target
                path = StorageManager.get_split_model_path(
                    storage, name, component, plan.split_config, file_format
                )
                if progress is not None:
                    progress.component(component, len(tensors), summary.memory_bytes)
                staged = stage_component(
                    tensors, path, metadata, progress.tensor if progress else None
                )
                try:
                    checkpoint.check_unchanged()  # the bytes written are all of one version
                except BaseException:
                    staged.abort()
                    raise
                if progress is not None:
                    progress.component_done()
                pending.append(committer.submit(_commit, staged, path, metadata, report, failed))
                del read, tensors
        except BaseException:
            failed.set()
            for future in pending:  # let queued commits abort; the first error is ours
                with contextlib.suppress(BaseException):
                    future.result()
            raise
        results += [future.result() for future in pending]
    return tuple(results)
