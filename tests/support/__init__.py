"""Code the tests share that is not a fixture: servers they start, models they build."""
