"""Developer scripts (`make demo`)."""
