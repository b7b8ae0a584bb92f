"""One router per resource; each route parses, calls one controller method and converts."""
