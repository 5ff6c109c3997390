"""`knowledge` (SPEC §9): a `chatkit_agent` route's own site, fetched, indexed for full-text
search in the route's store, searched by the agent and cited by URL.

config.py: the policy keys. model.py: pages, passages and hits. index.py: the index
interface; sql_index.py: `open_index` (SQLite FTS5 or PostgreSQL full text, by the store's
URL), with the backends in index_sqlite.py and index_postgres.py.
Fetching and extraction (sources.py, fetch.py, extract.py) feed `ingest.py`; the agent's
tool is tool.py. Nothing here is imported unless a policy has a knowledge block.
"""
