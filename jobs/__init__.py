"""Thin Ray entrypoints. Nothing imports this package."""
