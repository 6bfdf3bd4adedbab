"""HTTP transport: the listening socket and its connection slots, reads and writes with
deadlines, the request head, where a body ends, and the headers every reply carries."""
