"""The long-running streams: their Pipes jobs, the supervision policy and the supervisor sensors."""
