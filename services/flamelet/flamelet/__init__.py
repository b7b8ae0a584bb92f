"""flamelet: the Flame node agent (enrol, subscribe, fetch, verify, run, report)."""
