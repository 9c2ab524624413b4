"""Guardrails around the model (OWASP Top 10 for LLM applications):
- injection.py: prompt injection (LLM01) typed by users, English and Spanish;
- output.py: improper output handling (LLM05), sensitive information disclosure (LLM02) and
  system prompt leakage (LLM07) in what the model says;
- limits.py: unbounded consumption (LLM10): message size and per-user/channel rates.
Chat-template control tokens are neutralized when the prompt is rendered (llm/llama3.py).
Imports nothing from bots/ or workers/."""
