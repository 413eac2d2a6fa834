"""Where data and models come from: the benchmark registry, downloads and mirrors, offline models."""
