"""Reports over evaluation runs: statistics, the report's blocks, figures and rendering."""
