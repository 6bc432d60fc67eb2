"""Curriculum mixtures: select, render, validate and assemble training records."""
