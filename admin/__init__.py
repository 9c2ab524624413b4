"""Administration: per-channel settings, roles, the audit log, feedback and exports.

Knows no chat platform: bots/ hand it commands and ratings through the protocols in
bots/base.py, and workers/ read the channel settings for every message.
"""
