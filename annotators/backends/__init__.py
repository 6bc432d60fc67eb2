"""Video MLLM backends behind one interface (annotators.backends.base.Backend)."""
