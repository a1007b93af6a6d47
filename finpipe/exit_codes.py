"""Exit codes of finpipe's long-running processes: one definition for the processes and their
supervisors.

A supervisor retries ``TRANSIENT`` for ever (with a capped backoff); ``NO_RETRY`` means that a
restart cannot help (bad token, invalid settings, a refused checkpoint) and an operator must
fix something first.
"""

OK = 0
TRANSIENT = 1
NO_RETRY = 2
