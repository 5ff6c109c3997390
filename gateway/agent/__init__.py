"""Serving `chatkit_agent` routes: openai-chatkit's server, an Agents SDK agent, the store.

`config.py` (the policy keys) and `runtime.py` (the app's shared state) import nothing of
the `agent` extra; every other module here does, and is imported only once a policy has
such a route (gateway/routes/chatkit_agent.py).
"""
