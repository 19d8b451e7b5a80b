"""aiohttp: webhook endpoint, Mini App, health."""
