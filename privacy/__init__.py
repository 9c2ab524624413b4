"""Personal data: sealing at rest (AES-GCM) and redaction before anything is stored or sent
to the model. Imports nothing from bots/ or workers/."""
