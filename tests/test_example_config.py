"""The documented example configs are valid, example.yaml spells out exactly the defaults, and the README's cluster
recipe names a build that runs as written (no placeholder bucket, no checkpoint needed)."""

import os
import re
import shlex
from pathlib import Path

from jobs import build_longvid
from pipeline import stages as registry
from schemas import config as config_schema

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "configs" / "example.yaml"
S3_EXAMPLE = ROOT / "configs" / "s3.example.yaml"


def test_example_config_is_valid_and_matches_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # its sources are the demo's folder, relative to where the build is started
    (tmp_path / "longvid-demo" / "sources").mkdir(parents=True)
    data = config_schema.load_yaml(str(EXAMPLE))
    cfg = config_schema.build(data)
    defaults = config_schema.build({"sources": data["sources"], "out": data["out"]})
    assert config_schema.to_dict(cfg) == config_schema.to_dict(defaults)


def test_example_config_builds_the_demo_folder_not_a_placeholder():
    data = config_schema.load_yaml(str(EXAMPLE))
    assert data["sources"] == ["longvid-demo/sources"]  # what `make demo` creates
    assert not str(data["out"]).startswith("s3://")
    assert "my-bucket" not in EXAMPLE.read_text().split("\nray:")[0]


def test_s3_example_is_valid_and_only_changes_sources_out_and_storage():
    data = config_schema.load_yaml(str(S3_EXAMPLE))
    cfg = config_schema.build(data)
    assert all(s.startswith("s3://") for s in cfg.sources) and cfg.out.startswith("s3://")
    assert set(data) == {"sources", "out", "stages", "storage"}


def _cluster_recipe() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Running on a cluster\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def test_readme_cluster_recipe_runs_as_written(tmp_path, monkeypatch):
    recipe = _cluster_recipe()
    assert "--node-ip-address 127.0.0.1 --dashboard-host 127.0.0.1" in recipe
    assert "RAY_AUTH_MODE=token" in recipe
    assert re.search(r"^\S*ray stop\b", recipe, re.M), "the recipe says how to stop the head"
    submit = re.search(r"^\S*ray job submit .*?(?=\n\s*\n|\n#|\Z)", recipe, re.M | re.S).group(0)
    argv = shlex.split(submit.replace("\\\n", " ").replace("$PWD", str(tmp_path)))
    assert argv[argv.index("--working-dir") + 1] == "."
    job = argv[argv.index("--") + 1:]
    assert os.path.isabs(job[0]) and job[0].endswith("/.venv/bin/python"), "an absolute interpreter path"
    assert job[1] == "jobs/build_longvid.py"

    # The job runs in an uploaded copy of the checkout (relative paths are the checkout's); the demo folder the
    # recipe points at exists after `make demo`.
    monkeypatch.chdir(ROOT)
    for flag in ("--source", "--out"):
        assert os.path.isabs(job[job.index(flag) + 1]), f"{flag} must be absolute: the job's cwd is a copy"
    (tmp_path / "longvid-demo" / "sources").mkdir(parents=True)
    cfg = build_longvid.load_config(build_longvid.parse_args(job[2:]))  # raises ConfigError on any problem
    assert cfg.sources == [str(tmp_path / "longvid-demo" / "sources")]
    assert cfg.out == str(tmp_path / "longvid-demo" / "cluster-out")
    assert registry.resolve(cfg.stages) == ["crawl", "probe", "scenes", "shard"]  # no checkpoint needed
