"""The soak family behind bench/soak.py, its one entry point: `harness` runs the real
`main.py serve` (restartable on one DB and port) and holds the helpers every mode shares,
`clients` the retrying submitters and the task listing of crash mode, `crash` the kill -9
soak and its analysis, `hostile` a server facing a misbehaving robot, `mixup` kill -9
cycles against a text robot still working when the server comes back. Modules here import
bench-local `common` and each other as `soaks.<name>`, so bench/ must be on sys.path first
(bench/soak.py puts it there); docs/durability.md describes the modes and their figures.
"""
