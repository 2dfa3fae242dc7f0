"""One module per CLI verb: each has ``add_parser(verbs)`` registering its sub-parser and a
handler that calls one library function."""
