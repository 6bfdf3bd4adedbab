"""A G-code-like robot: a lab's own codec, its simulator and the contract run on both."""
