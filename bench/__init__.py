"""GlobMed-Bench tasks, the scorer, throughput runner, result records and reports."""
