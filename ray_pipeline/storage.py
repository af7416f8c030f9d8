"""Run storage: where the artifacts that Ray workers read or write on any node live.

The driver keeps the run directory (`<run.root>/<run.name>`: manifest, dataset, models, reports) on its own
disk. Ray workers on other nodes cannot see that disk unless it is a shared filesystem, so everything they
touch goes either through Ray's object store (model files and instances travel as bytes, see `pack`) or
through the run's *storage*:

- the dataset Parquet files that Ray Data reads during training (the driver uploads a copy),
- Ray Train checkpoints and Tune trials (written by Train workers and Tune).

`run.storage` unset: storage is the run directory itself (one machine, or a cluster whose `run.root` is a
shared filesystem mounted at the same path on every node). `run.storage` set to a URI that every node
reaches -- `s3://bucket/prefix`, `gs://bucket/prefix`, `abfs://...`, or an absolute path on a shared mount --
puts those artifacts under `<run.storage>/<run.name>/` through pyarrow's filesystems. S3-compatible stores
take their options in the URI (`s3://bucket/runs?endpoint_override=host:9000&scheme=http`) and credentials
from the usual environment variables, which the workers need too (a runtime_env's env_vars).
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pyarrow.fs as pafs

DONE = "_COMPLETE"  # written last into a remote directory: a directory without it is unfinished


class StorageError(ValueError):
    """A storage URI that cannot be used; the message names the config key and the URI."""


@dataclass(frozen=True)
class Storage:
    """The run's storage, addressed by the local run-directory path an artifact *would* have: the layout is
    the run directory's (`paths.RunPaths`), mirrored under `<run.storage>/<run.name>/`."""

    fs: pafs.FileSystem
    run_dir: Path  # the driver's run directory
    base: str  # this run's directory inside `fs`
    uri: str  # for messages and summaries
    shared_with_run_dir: bool  # True: storage *is* the run directory (nothing to upload)

    @classmethod
    def of(cls, run_dir: Path, uri: Optional[str], run_name: str) -> "Storage":
        if not uri:
            return cls(pafs.LocalFileSystem(), run_dir, str(run_dir), str(run_dir), True)
        fs, base = resolve(uri, "run.storage")
        return cls(fs, run_dir, f"{base.rstrip('/')}/{run_name}", f"{uri.split('?')[0].rstrip('/')}/{run_name}",
                   False)

    def _parts(self, local: Path) -> tuple[str, ...]:
        return Path(local).relative_to(self.run_dir).parts

    def path(self, local: Path) -> str:
        """Where `local` (a path inside the run directory) lives in storage, as a path inside `fs`."""
        return "/".join([self.base, *self._parts(local)])

    def uri_of(self, local: Path) -> str:
        return "/".join([self.uri, *self._parts(local)])

    def filesystem(self) -> Optional[pafs.FileSystem]:
        """What to give Ray Data / Train / Tune: None for the local run directory (their default)."""
        return None if self.shared_with_run_dir else self.fs

    def run_config(self, local: Path) -> dict[str, Any]:
        """`storage_path` / `storage_filesystem` keyword arguments of Train's and Tune's RunConfig."""
        return {"storage_path": self.path(local), "storage_filesystem": self.filesystem()}

    def exists(self, local: Path) -> bool:
        return self.fs.get_file_info(self.path(local)).type != pafs.FileType.NotFound

    def delete(self, local: Path) -> None:
        info = self.fs.get_file_info(self.path(local))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(info.path)

    def read_bytes(self, local: Path) -> Optional[bytes]:
        try:
            with self.fs.open_input_stream(self.path(local)) as f:
                return f.read()
        except (FileNotFoundError, OSError):
            return None

    def write_bytes(self, data: bytes, local: Path) -> None:
        with self.fs.open_output_stream(self.path(local)) as f:
            f.write(data)

    def complete(self, local: Path) -> bool:
        return self.shared_with_run_dir or self.exists(Path(local) / DONE)

    def mark_complete(self, local: Path) -> None:
        if not self.shared_with_run_dir:
            self.write_bytes(b"", Path(local) / DONE)

    def sync_dir(self, local: Path) -> str:
        """Make storage's copy of the local directory (no-op when storage is the run directory). Skipped when
        the copy is complete and its manifest.json equals the local one; otherwise the old copy is deleted
        first and the completion marker written last."""
        if self.shared_with_run_dir:
            return str(local)
        manifest = (local / "manifest.json").read_bytes() if (local / "manifest.json").exists() else None
        if manifest is not None and self.complete(local) and self.read_bytes(local / "manifest.json") == manifest:
            return self.path(local)
        self.delete(local)
        self.fs.create_dir(self.path(local), recursive=True)
        pafs.copy_files(str(local), self.path(local), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        self.mark_complete(local)
        return self.path(local)

    def archive(self) -> None:
        """Copy the run directory here, same layout (no-op when storage is the run directory): a cluster whose
        head disk is thrown away with it (a KubeRay RayJob) leaves the whole run in the bucket. Called after
        every finished stage; the dataset goes through `sync_dir` (once per version), manifest.json last."""
        run_dir = self.run_dir
        if self.shared_with_run_dir or not run_dir.is_dir():
            return
        local = pafs.LocalFileSystem()
        for p in sorted(run_dir.iterdir()):
            if p.name in ("datasets", "manifest.json") or p.name.startswith("."):
                continue
            if p.is_dir():
                self.fs.create_dir(self.path(p), recursive=True)
                pafs.copy_files(str(p), self.path(p), source_filesystem=local, destination_filesystem=self.fs)
            else:
                self.write_bytes(p.read_bytes(), p)
        if (run_dir / "datasets" / "main" / "manifest.json").exists():
            self.sync_dir(run_dir / "datasets" / "main")
        if (run_dir / "manifest.json").exists():
            self.write_bytes((run_dir / "manifest.json").read_bytes(), run_dir / "manifest.json")


def resolve(uri: str, key: str = "run.storage") -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI or an absolute path; a clear error naming `key` otherwise."""
    if "://" not in uri:
        p = Path(uri).expanduser()
        if not p.is_absolute():
            raise StorageError(f"{key}: {uri!r} is a relative path; every node must resolve it the same way, "
                               f"give an absolute path on a shared mount or a URI (s3://, gs://, ...)")
        return pafs.LocalFileSystem(), str(p)
    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as first:  # an fsspec-only scheme (e.g. adl://) may still work through fsspec
        try:
            import fsspec

            fs, path = fsspec.core.url_to_fs(uri)
            return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
        except Exception:
            raise StorageError(f"{key}: cannot open {uri.split('?')[0]!r} ({type(first).__name__}: "
                               f"{str(first)[:200]})") from None


# ------------------------------------------------------------------------------ files that travel as bytes
def pack(directory: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The named files of a local directory as bytes, to hand to a Ray task or actor on any node."""
    return {n: (Path(directory) / n).read_bytes() for n in names if (Path(directory) / n).exists()}


@contextlib.contextmanager
def unpacked(files: dict[str, bytes], label: str = "files") -> Iterator[Path]:
    """A temporary local directory holding `files` (on the node where the task runs)."""
    with tempfile.TemporaryDirectory(prefix=f"ray-pipeline-{label}-") as d:
        for n, data in files.items():
            (Path(d) / n).write_bytes(data)
        yield Path(d)
