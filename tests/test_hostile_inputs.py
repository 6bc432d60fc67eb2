"""Hostile local inputs and outputs: names that are not UTF-8, an `out` that cannot be written, sources holding
nothing, manifest paths escaping their folder, sources that vanish between probe and scenes, the per-job temporary
folder, and the in-process Ray listening on loopback only."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, make_config

from jobs import build_longvid
from pipeline.core import runner, tempdirs
from pipeline.core.entry import systemic_failure
from pipeline.ingest import crawl
from pipeline.io import storage
from schemas import layout, reasons
from schemas.sample import VIDEO_EXTENSIONS

BAD_NAME = b"bad\xff\xfe name.mp4"


def job_temp_is_clean(base: Path) -> None:
    """Nothing of a finished job is left in its temporary base folder."""
    left = [p.name for p in base.iterdir()] if base.exists() else []
    assert left == [], f"left behind in {base}: {left}"


def run_main(args: list[str]) -> tuple[int, str]:
    """The job's entry point in this process (Ray is the session's), returning (exit code, stderr)."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = build_longvid.main(args)
    return code, err.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# Names


def test_name_that_is_not_utf8_is_carried_probed_and_sharded(corpus, ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    good = os.path.join(os.fsencode(src), BAD_NAME)
    shutil.copyfile(corpus.root / "cuts.mp4", good)
    broken = os.path.join(os.fsencode(src), b"broken \xe9.mp4")  # latin-1 e-acute: not UTF-8 either
    shutil.copyfile(corpus.root / "random.mp4", broken)
    tmp = tmp_path / "tmp"
    cfg = make_config([src], tmp_path / "out", ["probe.part_size=1", f"storage.tmp_dir={tmp}"])
    runner.run_build(cfg, quiet=True)
    out = tmp_path / "out"
    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    rejects = pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()
    (video,) = videos
    assert video["source_uri"] == "file://" + str(src) + "/bad%FF%FE%20name.mp4"
    assert os.fsencode(storage.local_path(video["source_uri"])) == good, "the escaped URI names the exact bytes"
    assert video["shard"], "the video made it into a shard"
    (reject,) = rejects
    assert reject["source_uri"].endswith("/broken%20%E9.mp4") and reject["reason"] == reasons.UNREADABLE
    job_temp_is_clean(tmp)


# ---------------------------------------------------------------------------------------------------------------
# out, nothing found


def test_out_is_a_file_is_a_config_error_before_ray(corpus, tmp_path):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "jobs" / "build_longvid.py"), "--source", str(corpus.root),
                           "--out", str(target), "--set", f"storage.tmp_dir={tmp_path / 'tmp'}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [f"config error: out: {target} is a file, not a folder "
                                                f"(give a folder path (it is created when missing))"]
    assert "Ray" not in proc.stdout + proc.stderr and time.monotonic() - t0 < 30
    assert target.read_text() == "not a folder"
    assert not (tmp_path / "tmp").exists() or list((tmp_path / "tmp").iterdir()) == []


@pytest.mark.parametrize("out", ["/proc/longvid-out", "{file}/below"], ids=["not-writable", "below-a-file"])
def test_out_not_writable_is_a_config_error(corpus, tmp_path, out):
    (tmp_path / "f").write_text("x")
    out = out.format(file=tmp_path / "f")
    code, err = run_main(["--source", str(corpus.root), "--out", out])
    assert code == 2
    assert err.startswith("config error: out: ") and err.count("\n") == 1, err


def test_nothing_found_says_what_was_skipped_and_exits_2(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "out"
    code, err = run_main(["--source", str(src), "--out", str(out)])
    assert code == 2
    assert err.startswith("crawl: 0 inputs; skipped 1 file by extension (.txt) ("), err
    assert not (out / layout.MANIFEST_CRAWL).exists()


def test_empty_build_when_allowed(ray_local, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    code, err = run_main(["--source", str(src), "--out", str(tmp_path / "out"), "--stages", "crawl",
                          "--set", "crawl.allow_empty=true"])
    assert code == 0, err
    assert pq.read_table(tmp_path / "out" / layout.MANIFEST_CRAWL).num_rows == 0


def test_describe_skipped():
    from collections import Counter

    assert crawl.describe_skipped(Counter()) == ""
    assert crawl.describe_skipped(Counter({"txt": 2, "": 1, "jpg": 1})) == \
        "skipped 4 files by extension (.txt x2, (no extension), .jpg)"


# ---------------------------------------------------------------------------------------------------------------
# Manifest paths


@pytest.fixture
def confined(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "inside.mp4").write_bytes(b"x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "v.mp4").write_bytes(b"y")
    return lists, elsewhere


@pytest.mark.parametrize("ref", ["../../../../../../../etc/passwd", "/etc/passwd", "../elsewhere/v.mp4"])
def test_manifest_path_outside_its_folder_is_refused(confined, ref):
    lists, _ = confined
    manifest = lists / "m.csv"
    manifest.write_text(f"path\ninside.mp4\n{ref}\n")
    with pytest.raises(crawl.SourceError, match="record 2: .* outside the manifest's folder"):
        crawl.crawl([str(manifest)], VIDEO_EXTENSIONS)


def test_manifest_symlink_escaping_its_folder_is_refused(confined):
    lists, elsewhere = confined
    (lists / "link.mp4").symlink_to(elsewhere / "v.mp4")
    (lists / "m.csv").write_text("path\nlink.mp4\n")
    with pytest.raises(crawl.SourceError, match="outside"):
        crawl.crawl([str(lists / "m.csv")], VIDEO_EXTENSIONS)


def test_manifest_paths_below_an_allowed_root_or_when_allowed(confined):
    lists, elsewhere = confined
    (lists / "m.csv").write_text("path\ninside.mp4\n../elsewhere/v.mp4\n")
    rules = crawl.PathRules(allowed_roots=(str(elsewhere),))
    rows = crawl.crawl([str(lists / "m.csv")], VIDEO_EXTENSIONS, rules=rules)
    assert [r["source_uri"] for r in rows] == [str(elsewhere / "v.mp4"), str(lists / "inside.mp4")]
    rows = crawl.crawl([str(lists / "m.csv")], VIDEO_EXTENSIONS, rules=crawl.PathRules(anywhere=True))
    assert len(rows) == 2


def test_manifest_escape_through_the_job_exits_2(confined, ray_local, tmp_path):
    lists, _ = confined
    (lists / "m.csv").write_text("path\n/etc/passwd\n")
    code, err = run_main(["--source", str(lists / "m.csv"), "--out", str(tmp_path / "out")])
    assert code == 2
    assert err.startswith("config error: sources: ") and "crawl.allowed_roots" in err


# ---------------------------------------------------------------------------------------------------------------
# A source that vanishes or changes between probe and scenes


def _three_sources(corpus, tmp_path):
    """(src, out, tmp): three good videos copied into a folder of their own, an output and a job temporary folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("cuts.mp4", "with audio and spaces.mp4", "ünïcode.name.v2.mp4"):
        shutil.copyfile(corpus.root / name, src / name)
    return src, tmp_path / "out", tmp_path / "tmp"


def _remove_one_and_change_one(src):
    os.unlink(src / "cuts.mp4")
    with open(src / "ünïcode.name.v2.mp4", "ab") as f:
        f.write(b"changed")


def test_scenes_rejects_inputs_gone_or_changed_since_probe(corpus, ray_local, tmp_path):
    src, out, tmp = _three_sources(corpus, tmp_path)
    cfg = make_config([src], out, ["scenes.part_size=1", f"storage.tmp_dir={tmp}"], stages=["crawl", "probe"])
    runner.run_build(cfg, quiet=True)
    _remove_one_and_change_one(src)
    cfg = make_config([src], out, ["scenes.part_size=1", f"storage.tmp_dir={tmp}"], stages=["scenes"])
    runner.run_build(cfg, quiet=True)
    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    rejects = {os.path.basename(r["source_uri"]): r for r in pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()}
    assert [os.path.basename(v["source_uri"]) for v in videos] == ["with audio and spaces.mp4"]
    assert rejects["cuts.mp4"]["reason"] == reasons.DOWNLOAD_FAILED
    assert rejects["ünïcode.name.v2.mp4"]["reason"] == reasons.SOURCE_CHANGED
    assert "changed since it was probed" in rejects["ünïcode.name.v2.mp4"]["message"]
    job_temp_is_clean(tmp)


def test_shard_rejects_inputs_gone_or_changed_since_probe(corpus, ray_local, tmp_path):
    import json
    import tarfile

    src, out, tmp = _three_sources(corpus, tmp_path)
    sets = [f"storage.tmp_dir={tmp}"]
    runner.run_build(make_config([src], out, sets, stages=["crawl", "probe", "scenes"]), quiet=True)
    _remove_one_and_change_one(src)
    shard_cfg = make_config([src], out, sets, stages=["shard"])
    runner.run_build(shard_cfg, quiet=True)

    videos = pq.read_table(out / layout.MANIFEST_VIDEOS).to_pylist()
    rejects = {os.path.basename(r["source_uri"]): r for r in pq.read_table(out / layout.MANIFEST_REJECTS).to_pylist()}
    assert [os.path.basename(v["source_uri"]) for v in videos] == ["with audio and spaces.mp4"]
    assert videos[0]["shard"] == layout.shard_name(0)
    assert (rejects["cuts.mp4"]["reason"], rejects["cuts.mp4"]["stage"]) == (reasons.DOWNLOAD_FAILED, "shard")
    changed = rejects["ünïcode.name.v2.mp4"]
    assert (changed["reason"], changed["stage"]) == (reasons.SOURCE_CHANGED, "shard")
    assert "changed since it was probed" in changed["message"]
    with tarfile.open(out / layout.shard_path(0)) as tar:
        keys = sorted({m.name.split(".")[0] for m in tar.getmembers()})
    assert keys == [videos[0]["video_id"]]
    index = json.loads((out / layout.SHARD_INDEX).read_text())
    assert [s["nsamples"] for s in index["shardlist"]] == [1]
    job_temp_is_clean(tmp)

    # the decision is committed with the shard: a rerun rewrites nothing and reports the same rejects
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    runner.run_build(shard_cfg, quiet=True)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


# ---------------------------------------------------------------------------------------------------------------
# Temporary folder


def test_stale_job_folders_are_swept_and_a_live_one_is_kept(tmp_path):
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "longvid-job-0123456789abcdef"
    (stale / "longvid-hico-x").mkdir(parents=True)
    (stale / "longvid-hico-x" / "video.mp4").write_bytes(b"partial")
    (stale / "owner").write_text(f"{host} {dead.pid}\n")
    live = tmp_path / "longvid-job-fedcba9876543210"
    live.mkdir()
    (live / "owner").write_text(f"{host} 1\n")
    other_host = tmp_path / "longvid-job-aaaaaaaaaaaaaaaa"
    other_host.mkdir()
    (other_host / "owner").write_text(f"not-{host} {dead.pid}\n")
    unrelated = tmp_path / "someone-elses"
    unrelated.mkdir()
    folder = tempdirs.start_job("/some/out", str(tmp_path))
    try:
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [live.name, other_host.name, unrelated.name, os.path.basename(folder)])
        assert os.path.basename(tempdirs.mkdtemp("longvid-fetch-")).startswith("longvid-fetch-")
    finally:
        tempdirs.end_job(folder)
    assert not os.path.exists(folder)


def test_two_builds_of_one_output_at_once_are_refused(tmp_path):
    folder = tempdirs.job_dir("/some/out", str(tmp_path))
    os.makedirs(folder)
    with open(os.path.join(folder, "owner"), "w") as f:
        f.write(f"{socket.gethostname()} 1\n")  # pid 1 is always alive
    with pytest.raises(tempdirs.JobFolderBusy, match="pid 1"):
        tempdirs.start_job("/some/out", str(tmp_path))


def _scratch_task(out: str, base: str) -> dict:
    """A Ray task as the stages write them: configure, make a scratch folder, remove it (defined in a test, so Ray
    ships it by value)."""
    def task(unit: int) -> dict:
        import os
        import shutil

        from pipeline.core import tempdirs

        tempdirs.configure(out, base)
        scratch = tempdirs.mkdtemp("longvid-test-")
        with open(os.path.join(scratch, "f"), "wb") as f:
            f.write(b"x")
        shutil.rmtree(scratch)
        return {"pid": os.getpid(), "parent": os.path.dirname(scratch)}
    return task


def test_ray_workers_put_temporaries_in_their_own_subfolder_and_remove_it(ray_local, tmp_path):
    from pipeline.core import ray_runtime

    base = tmp_path / "tmp"
    folder = tempdirs.start_job("/some/out", str(base))
    try:
        (result,) = ray_runtime.map_units("test", _scratch_task("/some/out", str(base)), [0], (), "units")
        assert result["pid"] != os.getpid(), "ran in a Ray worker"
        assert result["parent"] == os.path.join(folder, f"worker-{result['pid']}")
        assert sorted(os.listdir(folder)) == ["owner"], "the worker removed its subfolder at the end of the task"
    finally:
        tempdirs.end_job(folder)
    # a node the driver is not on: the job folder has no owner there, and the last worker out removes it
    (result,) = ray_runtime.map_units("test", _scratch_task("/some/out", str(base)), [0], (), "units")
    assert result["parent"] == os.path.join(folder, f"worker-{result['pid']}")
    job_temp_is_clean(base)


def test_a_worker_sweeps_what_dead_workers_and_jobs_left_on_its_node(ray_local, tmp_path):
    from pipeline.core import ray_runtime

    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = tmp_path / "tmp"
    dead_driver = base / "longvid-job-0123456789abcdef"  # a killed driver's folder (this host)
    (dead_driver / f"worker-{dead.pid}").mkdir(parents=True)
    (dead_driver / "owner").write_text(f"{host} {dead.pid}\n")
    remote_job = base / "longvid-job-1111111111111111"  # a worker node's folder: no owner, one dead worker
    (remote_job / f"worker-{dead.pid}" / "longvid-fetch-x").mkdir(parents=True)
    (remote_job / f"worker-{dead.pid}" / "longvid-fetch-x" / "input.mp4").write_bytes(b"partial")
    (remote_job / f"worker-{dead.pid}" / "owner").write_text(f"{host} {dead.pid}\n")
    busy_job = base / "longvid-job-2222222222222222"  # a live worker's (pid 1 never dies)
    (busy_job / "worker-1").mkdir(parents=True)
    (busy_job / "worker-1" / "owner").write_text(f"{host} 1\n")
    ray_runtime.map_units("test", _scratch_task("/other/out", str(base)), [0], (), "units")
    assert sorted(p.name for p in base.iterdir()) == [busy_job.name]
    assert sorted(p.name for p in busy_job.iterdir()) == ["worker-1"]


def test_a_build_leaves_nothing_in_its_temporary_folder(corpus, ray_local, tmp_path):
    tmp = tmp_path / "tmp"
    cfg = make_config([corpus.root / "cuts.mp4", corpus.root / "sub dir"], tmp_path / "out",
                      [f"storage.tmp_dir={tmp}", "shard.payload=frames"])
    runner.run_build(cfg, quiet=True)
    assert pq.read_table(tmp_path / "out" / layout.MANIFEST_VIDEOS).num_rows == 2
    job_temp_is_clean(tmp)


# ---------------------------------------------------------------------------------------------------------------
# Ray


def test_in_process_ray_listens_on_loopback_only(ray_local):
    import ray

    assert ray.util.get_node_ip_address() == "127.0.0.1"
    ours = _descendants(os.getpid())
    listening = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()
    addresses = [ln.split()[3] for ln in listening if any(f"pid={p}," in ln for p in ours)]
    assert addresses, "the local Ray listens somewhere"
    assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")) for a in addresses), addresses


def _descendants(pid: int) -> set[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                pass
    found, changed = {pid}, True
    while changed:
        changed = False
        for p, pp in parents.items():
            if pp in found and p not in found:
                found.add(p)
                changed = True
    return found


# ---------------------------------------------------------------------------------------------------------------
# Systemic failures


def test_disk_full_and_storage_outage_are_one_line_others_are_not():
    import errno

    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/x/input.mp4")
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("task failed") from inner
    except RuntimeError as wrapped:
        assert systemic_failure(wrapped) == (
            "disk: No space left on device: /tmp/x/input.mp4 (free space, or point storage.tmp_dir at a larger disk)")
    outage = storage.StorageUnavailable("http://s3:9000", "PutObject", "s3://b/k", "ReadTimeoutError: x")
    assert systemic_failure(outage).startswith("storage: S3 endpoint http://s3:9000 failed PutObject")
    assert systemic_failure(FileNotFoundError(errno.ENOENT, "gone")) is None
    assert systemic_failure(ConnectionResetError(errno.ECONNRESET, "reset")) is None
