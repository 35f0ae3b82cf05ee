"""LLM plumbing shared by the association service's `llm` (HTTP) and `transformers` (in-process) backends:
an OpenAI-compatible client, the prompts, the parsing of untrusted replies, and the CNA and layout logic."""
