"""The Textual chat app for clinic laptops. Core packages never import this."""
