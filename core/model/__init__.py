"""Models Allot plans and trains: the built-in GPT and Hugging Face configs."""
