"""What users run today, written from the published code's semantics: the baselines
that tests check the fast ops against and that bench/ measures them against."""
