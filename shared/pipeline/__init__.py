"""What happens to events and people after the API accepts them: per-customer summaries and activity rollups,
rescoring, the profile cache versions, erasure, jobs, reference places."""
