"""Slack: the outbound half (posting answers into threads) and its pure text helpers."""
