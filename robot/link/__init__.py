"""The robot link: the port, the reader thread, one command at a time, STOP, the
handshake and reconnects. ``RobotLink`` (driver.py) is its public face."""
