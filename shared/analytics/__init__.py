"""Analytics shared by the API (profiles on a cache miss) and the analytics service: the numerical
core (`models/`), per-user scoring from customer summaries, and the stored population model."""
