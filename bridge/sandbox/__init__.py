"""Local stand-ins for the Hugging Face Hub and LangSmith, used by `--sandbox` and by the tests."""
