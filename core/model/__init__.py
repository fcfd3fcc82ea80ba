"""Models Allot plans and trains: the built-in GPT and Hugging Face configs; config.py holds
the torch-free model choice (ModelChoice, GPTSize, GPTConfig); model_spec.py turns a choice
or a name into the ModelSpec that is planned."""
