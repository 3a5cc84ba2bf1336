"""Built-in metrics. Deliberately empty: they are found only through the ``ftprobe.metrics`` entry points."""
