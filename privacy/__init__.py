"""Personal data: found (analyzer, recognizers, names, secrets), replaced by per-thread
placeholders before anything is stored or sent to the model (redactor, vault), sealed at
rest with AES-GCM (crypto). Imports nothing from bots/ or workers/."""
