"""Talking to models: chat messages in, text chunks out. Imports nothing from bots/ or workers/."""
