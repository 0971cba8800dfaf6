"""Development tools, never on the production path: the Ittybit emulator, sample payloads
and `pipeline send`, the demo, and the process harness the demo, tests and bench share."""
