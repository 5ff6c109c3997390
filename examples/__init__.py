"""Runnable examples. A package so that demo/ and tests/ reuse their parts, such as the
example ChatKit server's in-memory store (`examples.chatkit_server.store`)."""
