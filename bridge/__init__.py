"""hub-langsmith-bridge: moves eval results from the Hugging Face Hub to LangSmith and traced runs back."""

__version__ = "0.2.0"
