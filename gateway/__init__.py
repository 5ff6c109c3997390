"""chatkit-gateway: an edge gateway for embedded OpenAI ChatKit and Realtime widgets."""

__version__ = "0.1.0"
