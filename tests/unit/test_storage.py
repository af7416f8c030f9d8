"""Run storage on a second local directory (a stand-in for a shared mount; S3 is covered by the multinode test)."""
from pathlib import Path

import pytest

from ray_pipeline.storage import DONE, Storage, StorageError, pack, resolve, unpacked


def _dataset(d: Path, version: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "states_train.parquet").write_bytes(b"rows-" + version.encode())
    (d / "manifest.json").write_text(version)
    return d


def test_default_storage_is_the_run_directory(tmp_path):
    s = Storage.of(tmp_path / "run", None, "run")
    ck = tmp_path / "run" / "checkpoints"
    assert s.shared_with_run_dir and s.path(ck) == str(ck)
    assert s.run_config(tmp_path / "run" / "checkpoints") == {"storage_path": str(tmp_path / "run" / "checkpoints"),
                                           "storage_filesystem": None}
    assert s.sync_dir(tmp_path / "run" / "datasets" / "main") == \
        str(tmp_path / "run" / "datasets" / "main")


def test_dataset_is_uploaded_once_per_version_and_marked_complete_last(tmp_path):
    local = _dataset(tmp_path / "run" / "datasets" / "main", "v1")
    s = Storage.of(tmp_path / "run", str(tmp_path / "bucket"), "run")
    remote = tmp_path / "bucket" / "run" / "datasets" / "main"
    assert not s.complete(local)
    s.sync_dir(local)
    assert (remote / DONE).exists() and (remote / "states_train.parquet").read_bytes() == b"rows-v1"
    (remote / "states_train.parquet").write_bytes(b"touched")  # same manifest: not uploaded again
    s.sync_dir(local)
    assert (remote / "states_train.parquet").read_bytes() == b"touched"
    _dataset(local, "v2")  # a new dataset version replaces the old copy
    s.sync_dir(local)
    assert (remote / "states_train.parquet").read_bytes() == b"rows-v2"
    (remote / DONE).unlink()  # an unfinished upload is redone
    (remote / "states_train.parquet").write_bytes(b"half")
    s.sync_dir(local)
    assert (remote / "states_train.parquet").read_bytes() == b"rows-v2" and (remote / DONE).exists()


def test_archive_copies_the_run_directory_with_the_same_layout(tmp_path):
    run = tmp_path / "run"
    _dataset(run / "datasets" / "main", "v1")
    (run / "models" / "student").mkdir(parents=True)
    (run / "models" / "student" / "model.onnx").write_bytes(b"onnx")
    (run / "manifest.json").write_text("{}")
    (run / ".tmp-half-written").write_text("x")
    s = Storage.of(run, str(tmp_path / "bucket"), "run")
    s.archive()
    got = sorted(str(p.relative_to(tmp_path / "bucket" / "run")) for p in (tmp_path / "bucket" / "run").rglob("*")
                 if p.is_file())
    assert got == ["datasets/main/_COMPLETE", "datasets/main/manifest.json", "datasets/main/states_train.parquet",
                   "manifest.json", "models/student/model.onnx"]


def test_bad_uris_name_the_key(tmp_path):
    with pytest.raises(StorageError, match="run.storage: 'rel/dir' is a relative path"):
        resolve("rel/dir")
    with pytest.raises(StorageError, match="run.storage: cannot open 'nosuchscheme://x/y'.*Unrecognized"):
        resolve("nosuchscheme://x/y")


def test_files_travel_as_bytes(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    files = pack(tmp_path, ("model.pt", "model.json"))  # a missing name is left out
    assert files == {"model.pt": b"weights"}
    with unpacked(files) as d:
        assert (d / "model.pt").read_bytes() == b"weights" and d != tmp_path
    assert not d.exists()
