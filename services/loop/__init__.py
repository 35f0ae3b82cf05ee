"""The closed loop's service: advances loops (docs/loop.md) on its own queue, `loop`."""
