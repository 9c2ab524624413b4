"""Test helpers that are not fakes: signed Slack deliveries, Parley processes."""
