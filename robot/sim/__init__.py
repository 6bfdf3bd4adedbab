"""The simulated robot: the built-in firmware on a pty or a loopback TCP port.

``RobotSimulator`` (simulator.py) is the device; its command engine, hostile modes,
line formats and byte channels are one module each. Run it alone with
``python -m robot.sim``.
"""
