"""Parley: a self-hosted assistant for Slack and Microsoft Teams."""
