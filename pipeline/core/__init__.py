"""Run a build: context, runner, stage plumbing, committed units, Ray runtime, progress, temp folders."""
