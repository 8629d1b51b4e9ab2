"""The model the ``ollama_smollm2`` fixture installs, and its base model spec."""

NAME = "smollm2:135m-instruct-q4_1"
SPEC = f"ollama:{NAME}"
