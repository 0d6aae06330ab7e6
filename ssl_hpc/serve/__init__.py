"""The similarity-search web page: a FastAPI server over an embedding set and its survey."""
