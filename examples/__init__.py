"""Examples: client scripts, and a lab's own robot protocol (gcode_robot/)."""
