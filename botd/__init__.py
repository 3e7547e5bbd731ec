"""botd: an order-taking chat bot daemon for Chat2Desk."""

__version__ = "0.1.0"
