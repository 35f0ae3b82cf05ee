"""Association-queue backends (CNA and layout), registered lazily by import path."""

from dreammask.shared.registry import register_backend

_P = "dreammask.services.association.backends"

register_backend("association", "embedding", f"{_P}.embedding:EmbeddingAssociation")
register_backend("layout", "prior", f"{_P}.prior_layout:PriorLayoutSampler")
register_backend("association", "llm", f"{_P}.llm:LLMAssociation")
register_backend("layout", "llm", f"{_P}.llm:LLMLayoutPlanner")
register_backend("association", "transformers", f"{_P}.local_llm:LocalLLMAssociation")
register_backend("layout", "transformers", f"{_P}.local_llm:LocalLLMLayoutPlanner")
