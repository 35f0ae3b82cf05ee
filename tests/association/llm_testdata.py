"""Data shared by the LLM tests (a module of its own: `conftest` is ambiguous when the whole suite runs)."""

TRAIN = ["building", "car", "person", "dog", "table", "tree"]
