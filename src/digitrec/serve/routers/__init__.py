"""The API's routers, one per area: predictions, service information, the web page."""
