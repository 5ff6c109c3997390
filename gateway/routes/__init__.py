"""Request handlers: the token routes and the ChatKit proxy, dispatched by the policy."""
