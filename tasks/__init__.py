"""Task records, the SQLite store, the FIFO queue and the worker that drives the robot."""
