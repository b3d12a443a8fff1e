"""The two translation directions, by name: every model, metric, callback and the Translator use these."""

DIRECTIONS = ("a2b", "b2a")
ENDPOINTS = {"a2b": ("a", "b"), "b2a": ("b", "a")}  # direction -> (source domain, target domain)
REVERSE = {"a2b": "b2a", "b2a": "a2b"}  # direction -> the way back (the cycle)
