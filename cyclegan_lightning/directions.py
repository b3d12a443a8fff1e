"""The two translation directions, by name: every model, metric, callback and the Translator use these.

A consumer iterates the directions a model actually has (``model.generators``; CUT has ``a2b`` only) and derives
domains and the way back from these tables, never from the letters of the name."""

DIRECTIONS = ("a2b", "b2a")
ENDPOINTS = {"a2b": ("a", "b"), "b2a": ("b", "a")}  # direction -> (source domain, target domain)
REVERSE = {"a2b": "b2a", "b2a": "a2b"}  # direction -> the way back (the cycle)
LEAVING = {source: direction for direction, (source, _) in ENDPOINTS.items()}  # domain -> the direction out of it
