"""Small shared helpers: folders and the config file (rank 0), qualifications (rank 1)."""
