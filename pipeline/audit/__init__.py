"""The audit stage: duplicates, train/validation leakage, label issues and class balance of a
fetched dataset, as reports/audit.json and a section of the summary page."""
