"""Study runner: stage records, statistics, report (Table 1, Figure 5, Figure 6)."""
