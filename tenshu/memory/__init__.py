"""Memory: local retrieval over a person's documents and conversations.

    from tenshu.memory import Memory
    memory = Memory(store)                         # [memory] settings; embedders load on use
    await memory.ingest(principal, "notes", [Path("~/notes")])
    hits = await memory.search(principal, "rotate the keys", ["notes"], k=5)

readers.py and chunking.py turn files into chunks; ingest.py embeds and writes them; index.py
holds the keyword and vector legs (pg.py: PostgreSQL's); retrieval.py fuses and ranks;
feedback.py turns ratings and corrections into ranking; stage.py is the gateway's stage.
"""

from tenshu.memory.ingest import Summary
from tenshu.memory.memory import Memory
from tenshu.memory.retrieval import Hit

__all__ = ["Hit", "Memory", "Summary"]
