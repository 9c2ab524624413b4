"""Guardrails around the model, after the OWASP Top 10 for LLM Applications (2025).

- injection.py: LLM01 prompt injection, and the LLM07 attempts to extract the system prompt:
  English and Spanish heuristics and fake role markers, accent/case/whitespace-insensitive.
  (Chat-template control tokens themselves are always neutralized when the prompt is
  rendered, by llm.llama3.)
- policy.py: LLM01 response to a finding: the refusal people read, or the hardened system
  prompt that tells the model to treat the message as data; the messages of the limits.
- output.py: LLM05 improper output handling (no @channel / <!everyone> / <at> mass pings,
  capped user mentions), LLM02 sensitive information disclosure (an injected secret
  redactor) and LLM07 system prompt leakage (verbatim echoes withheld).
- limits.py: LLM10 unbounded consumption: message size, per-user and per-channel rates
  shared through Redis.

Imports nothing from bots/ or workers/; never logs message text.
"""
