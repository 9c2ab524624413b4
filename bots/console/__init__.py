"""The console: talk to Parley from a terminal (`parley chat`), through the same queue,
worker, memory, redaction and model as Slack and Teams. The smallest platform adapter,
and the proof that adding one is one package plus one registry line."""
