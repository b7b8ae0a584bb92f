"""Jobs: design/job-spec validation, task expansion, state machines and the reconciler."""
