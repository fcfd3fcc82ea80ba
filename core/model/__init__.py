"""Models Allot plans and trains: the built-in GPT and Hugging Face configs; config.py holds
the torch-free model choice (ModelChoice, GPTSize, GPTConfig)."""
