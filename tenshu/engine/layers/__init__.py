"""Building blocks of decoder models: paged attention, rotary embeddings, norms, MLP."""
