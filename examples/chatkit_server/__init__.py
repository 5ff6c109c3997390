"""The example ChatKit server. Run it as a script (see README.md next to this file); as a
package, demo/chatkit_backend.py and tests/support/chatkit_backend.py reuse its store and its
aiohttp answers."""
