"""Data in: reading and typing the source table, validation suites, the split, synthetic tables and batch streams."""
