"""What a command prints: a known failure ends it with one line on stderr and its exit code (no traceback), anything
unexpected keeps its traceback; progress is logged at INFO on stdout, warnings on stderr; --quiet leaves warnings
and errors only, --verbose adds debug lines, in the driver and in Ray workers alike."""

from __future__ import annotations

import errno
import logging
import subprocess
import sys

import pytest
from conftest import ROOT

from pipeline.core import entry, log
from pipeline.core.context import StageInputMissing
from pipeline.ingest.crawl import NothingFound, SourceError
from pipeline.io.storage import StorageUnavailable
from schemas.config import ConfigError
from schemas.errors import LongVidError, UsageError


@pytest.fixture(autouse=True)
def _default_logging():
    yield
    log.configure()  # entry.run set this process's levels (DEBUG, for one test): back to the default for later tests


def run_entry(capsys, body, level=logging.INFO, resumable=False) -> tuple[int, str, str]:
    code = entry.run(body, level, resumable=resumable)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def raising(exc: BaseException):
    def body():
        raise exc
    return body


class FakeRayTaskError(Exception):
    """Ray re-raises a task's exception wrapped, keeping the original as `cause` (its str is a traceback)."""

    def __init__(self, cause: BaseException):
        super().__init__("Traceback (most recent call last):\n  ... ray worker frames ...")
        self.cause = cause


@pytest.mark.parametrize("exc,code,line", [
    (StageInputMissing("manifest/crawl.parquet is missing under /o: run the `crawl` stage first"), 1,
     "error: manifest/crawl.parquet is missing under /o: run the `crawl` stage first"),
    (ConfigError("probe.foo", "unknown key", "remove it"), 2, "config error: probe.foo: unknown key (remove it)"),
    (SourceError("m.csv record 2 has no `url` or `path` value"), 2,
     "config error: sources: m.csv record 2 has no `url` or `path` value (check the source URI, its credentials "
     "and the manifest's columns)"),
    (NothingFound("crawl: 0 inputs; skipped 1 file by extension (.txt)"), 2,
     "crawl: 0 inputs; skipped 1 file by extension (.txt) (check the sources and crawl.extensions, or set "
     "crawl.allow_empty: true to build an empty corpus)"),
    (UsageError("bad flag", hint="use --good"), 2, "error: bad flag (use --good)"),
])
def test_known_failure_is_one_line_and_its_exit_code(capsys, exc, code, line):
    got, out, err = run_entry(capsys, raising(exc), resumable=True)
    assert got == code
    assert err == line + "\n"
    assert out == ""


def test_a_known_failure_raised_in_a_ray_task_is_its_own_line(capsys):
    outage = StorageUnavailable("http://s3:9000", "GetObject", "s3://b/k", "ReadTimeoutError: x")
    code, _, err = run_entry(capsys, raising(FakeRayTaskError(outage)), resumable=True)
    assert code == 1
    assert err == ("error: storage: S3 endpoint http://s3:9000 failed GetObject of s3://b/k (ReadTimeoutError: x); "
                   "committed work is kept: rerun the same command to resume\n")
    # a command that does not resume says no such thing
    code, _, err = run_entry(capsys, raising(FakeRayTaskError(outage)), resumable=False)
    assert (code, err) == (1, "error: storage: S3 endpoint http://s3:9000 failed GetObject of s3://b/k "
                              "(ReadTimeoutError: x)\n")


def test_known_failures_inside_ray_data_are_found(ray_local):
    """Ray Data keeps a map function's exception, and the exception of an actor's __init__, only as text (a
    UserCodeException, an ActorDiedError): the handler still finds the LongVidError, its class and exit code."""
    import ray
    from compressors.encoder import EncoderWeightsError

    class BrokenCheckpoint:
        def __init__(self):
            raise EncoderWeightsError("cannot read encoder checkpoint /c.safetensors: header too large")

        def __call__(self, batch):
            return batch

    def missing_input(batch):
        raise StageInputMissing("manifest/videos.parquet is missing under /o: run the `shard` stage first")

    items = ray.data.from_items([{"a": 1}])
    cases = [(items.map_batches(BrokenCheckpoint, compute=ray.data.ActorPoolStrategy(size=1), batch_size=1),
              EncoderWeightsError, 2, "error: cannot read encoder checkpoint /c.safetensors: header too large"),
             (items.map_batches(missing_input, batch_size=1), StageInputMissing, 1,
              "error: manifest/videos.parquet is missing under /o: run the `shard` stage first")]
    for ds, cls, code, line in cases:
        with pytest.raises(Exception) as raised:
            ds.take_all()
        assert not isinstance(raised.value, LongVidError), "Ray changed: the original now survives as such"
        failure = entry.known_failure(raised.value)
        assert type(failure) is cls and failure.exit_code == code and failure.line() == line


def test_disk_full_is_a_known_failure(capsys):
    full = OSError(errno.ENOSPC, "No space left on device", "/tmp/job/x.mp4")
    code, _, err = run_entry(capsys, raising(FakeRayTaskError(full)), resumable=True)
    assert code == 1
    assert err.startswith("error: disk: No space left on device: /tmp/job/x.mp4 (free space")
    assert err.count("\n") == 1


def test_unexpected_exceptions_keep_their_traceback(capsys):
    with pytest.raises(ZeroDivisionError):
        entry.run(lambda: 1 // 0, logging.INFO)
    # a bug while handling a known failure is not hidden behind that failure's line
    def handles_then_breaks():
        try:
            raise SourceError("bad manifest")
        except SourceError:
            return {}["missing"]
    with pytest.raises(KeyError):
        entry.run(handles_then_breaks, logging.INFO)
    assert capsys.readouterr().err == ""


def test_verbose_adds_the_traceback_of_a_known_failure(capsys):
    code, _, err = run_entry(capsys, raising(StageInputMissing("no input")), level=logging.DEBUG)
    assert code == 1
    assert "Traceback" in err and err.endswith("error: no input\n")


def test_every_project_exception_is_a_longvid_error_and_keeps_its_old_base():
    from annotators.backends.hico_mllm import HicoMllmCheckpointError
    from annotators.validation import InvalidOutput
    from compressors.encoder.checkpoint import EncoderWeightsError, KeyCollision
    from pipeline.audit import NotABuild, QueryError
    from pipeline.core.errors import Rejection
    from pipeline.core.tempdirs import JobFolderBusy
    from pipeline.ingest.manifest import ReconcileError
    from pipeline.io.fetch import FetchError
    from pipeline.loader.stream import NoShardsForRank
    from pipeline.mix.validate import MixValidationError
    from pipeline.niah.errors import NiahInputError
    from pipeline.niah.score import PredictionsError
    from pipeline.stages import UnknownStage
    from pipeline.stats.tables import StatsMismatch
    from schemas.tables import SchemaMismatch

    usage = [ConfigError, SourceError, NothingFound, NiahInputError, PredictionsError, UnknownStage, NoShardsForRank,
             HicoMllmCheckpointError, EncoderWeightsError, KeyCollision]
    failed = [StageInputMissing, StorageUnavailable, StatsMismatch, MixValidationError, ReconcileError, NotABuild,
              QueryError, JobFolderBusy, Rejection, FetchError, InvalidOutput, SchemaMismatch]
    for cls in usage + failed:
        assert issubclass(cls, LongVidError), cls
        assert cls.exit_code == (2 if cls in usage else 1), cls
    for cls in (ConfigError, SourceError, NiahInputError, PredictionsError, KeyCollision, InvalidOutput):
        assert issubclass(cls, ValueError), cls
    for cls in (StorageUnavailable, StatsMismatch, MixValidationError, NotABuild, StageInputMissing):
        assert issubclass(cls, RuntimeError), cls


# ---------------------------------------------------------------------------------------------------------------
# Real commands in their own process


def command(*args, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_cli_known_failure_is_exactly_one_stderr_line(tmp_path):
    proc = command("jobs/cli.py", "audit", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith("error: ")
    assert "not a LongVid build output" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unexpected_exception_in_a_command_shows_its_traceback():
    proc = command("-c", "import sys; from pipeline.core import entry; sys.exit(entry.run(lambda: 1 // 0, 20))")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "ZeroDivisionError" in proc.stderr


def build(corpus, out, *flags) -> subprocess.CompletedProcess:
    return command("jobs/build_longvid.py", "--source", str(corpus.root / "cuts.mp4"), "--out", str(out),
                   "--stages", "crawl,probe", "--set", f"storage.tmp_dir={out.parent / 'tmp'}", *flags)


@pytest.mark.slow  # two jobs, each starting its own Ray
def test_quiet_shows_no_progress_and_verbose_shows_debug_lines_from_driver_and_workers(corpus, tmp_path):
    quiet = build(corpus, tmp_path / "quiet", "--quiet")
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    logged = [ln for ln in quiet.stdout.splitlines() if "[crawl]" in ln or "[probe]" in ln]
    assert logged == [], quiet.stdout
    assert "Started a local Ray instance" not in quiet.stderr
    assert "LongVid build summary" in quiet.stdout, "the summary table is the command's output, not a log line"

    verbose = build(corpus, tmp_path / "verbose", "--verbose")
    assert verbose.returncode == 0, verbose.stderr[-3000:]
    lines = verbose.stdout.splitlines()
    assert "[crawl] crawl: 1 inputs from 1 sources" in lines, verbose.stdout
    assert any(ln.startswith("[build] DEBUG: stages crawl,probe; out ") for ln in lines), verbose.stdout
    # logged inside the probe task (a Ray worker), forwarded by Ray with the task's name in front
    from_worker = [ln for ln in lines if "[probe] DEBUG: part-" in ln]
    assert from_worker and all("probe_part" in ln for ln in from_worker), verbose.stdout
    # Ray forwards a worker line with print(), which writes the text and its newline separately: a driver line
    # (progress) can land between the two, so the worker's text is checked, not where its line ends.
    assert "part-000000-" in from_worker[0] and ": 1 accepted, 0 rejected" in from_worker[0]
