"""Drop-in fidelity: the one line never changes what worked. Each test runs one app
twice, without and with StreamMiddleware, and asserts the same behaviour; a variant
with the line that fails today because of a named core defect is a strict xfail, so
the fix flips it."""
