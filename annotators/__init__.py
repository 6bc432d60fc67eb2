"""Model backends and caption / QA / grounding annotators (later issues)."""
