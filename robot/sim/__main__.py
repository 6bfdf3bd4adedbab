"""``python -m robot.sim``: the simulated robot on a pty or a TCP port, until Ctrl+C."""

import sys

from robot.sim.simulator import main

sys.exit(main())
