"""The durable ledger: SQL tables (source of truth) and the repository that reads and writes them."""
