"""report.html: summary, plots, curriculum and gallery in one self-contained file."""
