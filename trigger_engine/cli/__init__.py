"""The command line: ``main`` parses and maps errors to exit codes, ``commands`` runs one
command each, ``render`` turns what they found into text and JSON."""
