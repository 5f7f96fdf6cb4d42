"""finsentry: streaming financial news and social media risk monitor."""

__version__ = "0.1.0"
