"""Video encoder, HiCo token merging and token I/O (later issues)."""
