"""python-telegram-bot handlers, keyboards and texts (thin: parse, call a use case, render)."""
