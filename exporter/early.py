"""SIGHUP never ends the exporter: ignored as soon as the program starts, until it becomes a reload.

Imported by cli.py before the slow imports (httpx, prometheus_client, bcrypt: a few hundred
milliseconds), so that a SIGHUP sent just after start (a supervisor's reload, a careless
`pkill -HUP`) finds it already ignored. Only the interpreter's own start-up comes before.
"""

import signal

signal.signal(signal.SIGHUP, signal.SIG_IGN)
