"""`knowledge` (SPEC §9): a `chatkit_agent` route's own site, fetched, indexed for full-text
search in the route's store, searched by the agent and cited by URL. Nothing here is
imported unless a policy has a knowledge block. The modules: docs/DESIGN.md, Knowledge.
"""
